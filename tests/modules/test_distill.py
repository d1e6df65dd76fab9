"""Distillation through the real CLI and config: learning, saving, teacher handling, resume and DDP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from lmshrink.cli import main
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.distill.losses import soft_target_kl
from lmshrink.distill.options import LossWeights, StudentSource
from lmshrink.errors import OptionError
from lmshrink.modules import Distillation
from lmshrink.options import as_settings
from tests.card_checks import assert_card_reports
from tests.helpers import callbacks_overlay, final_weights, group_record, run_train_py, tiny_run_args


def fixed_batch(model_dir, size=64):
    dm = GroupedTextDataModule(tokenizer_path=str(model_dir))
    dm.setup("fit")
    dataset = dm.datasets["val"]
    return dm.train_dataloader().collate_fn([dataset[i] for i in range(size)])


def kd_loss(student, teacher, batch) -> float:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        return soft_target_kl(student(**inputs).logits, teacher(**inputs).logits, temperature=2.0).item()


@pytest.mark.slow
def test_distillation_lowers_kd_loss_and_saves_a_loadable_student(tiny_bert_varied_dir, tmp_path):
    root = tmp_path / "run"
    before = Distillation(teacher_path=str(tiny_bert_varied_dir), student=StudentSource(num_layers=1))
    batch = fixed_batch(tiny_bert_varied_dir)
    initial = kd_loss(before.model.eval(), before.teacher, batch)
    main(["fit", *tiny_run_args(tiny_bert_varied_dir, root, "--model.learning_rate=1e-3", "--model.loss_weights.hidden=0",
                                train_batches=30, distill=True)])
    student = AutoModelForSequenceClassification.from_pretrained(root / "student", local_files_only=True).eval()
    assert student.config.num_hidden_layers == 1
    assert kd_loss(student, before.teacher, batch) < 0.7 * initial
    # the saved directory holds exactly the student the run ended with
    module_state = {k.removeprefix("model."): v for k, v in final_weights(root).items() if k.startswith("model.")}
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, module_state[key], rtol=0, atol=0, msg=key)
    record = group_record(root, "test")
    assert set(record["delta_to_teacher"]) == {g["group"] for g in record["groups"]}
    assert record["teacher"]["avg_acc"] != pytest.approx(1 / 3)
    card = assert_card_reports(root / "student", record)  # per-group deltas to the teacher, on the student's card
    assert "distillation" in card.data.tags and f"`{tiny_bert_varied_dir}`" in card.text
    assert "| group | n | accuracy | 95 % interval | teacher | delta |" in card.text


def test_teacher_is_frozen_and_kept_out_of_checkpoint_and_optimizer(tiny_bert_dir):
    module = Distillation(teacher_path=str(tiny_bert_dir),
                          student=StudentSource(config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32}),
                          loss_weights=LossWeights(hidden=1.0, embedding=1.0, cosine=1.0, attention=1.0))
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    assert all(key.startswith(("model.", "objective.projections.", "eval_loss.")) for key in module.state_dict())
    teacher_ids = {id(p) for p in module.teacher.parameters()}
    assert teacher_ids.isdisjoint(id(p) for p in module.parameters())
    projections = module.objective.projections
    assert len(projections) == 2  # widths differ (16 vs 32): embeddings + 1 layer
    batch = fixed_batch(tiny_bert_dir, size=8)
    with torch.no_grad():
        teacher_out = module._outputs(module.teacher, batch, features=True)
    student_out = module._outputs(module.model, batch, features=True)
    loss, terms = module.objective(student_out, teacher_out, batch)
    assert set(terms) == {"kd", "hidden", "embedding", "cosine", "attention"}
    # each term against an independent computation in plain torch (layer map "uniform": student block 0 <- teacher
    # block 1, i.e. hidden states 1 <- 2; projections[i] maps the student's hidden state i to the teacher's width)
    tokens = batch["attention_mask"].bool()
    T = module.hparams.temperature
    kd = F.kl_div(F.log_softmax(student_out.logits / T, -1), F.log_softmax(teacher_out.logits / T, -1),
                  log_target=True, reduction="batchmean") * T**2
    s_hidden, t_hidden = student_out.hidden_states, teacher_out.hidden_states
    hidden = (projections[1](s_hidden[1]) - t_hidden[2]).pow(2).mean(-1)[tokens].mean()
    embedding = (projections[0](s_hidden[0]) - t_hidden[0]).pow(2).mean(-1)[tokens].mean()
    cosine = (1 - F.cosine_similarity(projections[1](s_hidden[-1]), t_hidden[-1], dim=-1))[tokens].mean()
    s_att, t_att = student_out.attentions[0].mean(1), teacher_out.attentions[1].mean(1)
    attention = (t_att * (t_att.clamp(min=1e-12).log() - s_att.clamp(min=1e-12).log())).sum(-1)[tokens].mean()
    expected = {"kd": kd, "hidden": hidden, "embedding": embedding, "cosine": cosine, "attention": attention}
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), name
    hp = module.hparams
    weighted = sum(getattr(as_settings(hp.loss_weights, LossWeights), name) * value for name, value in expected.items())
    assert loss.item() == pytest.approx(weighted.item(), rel=1e-5)
    loss.backward()
    assert projections[1].weight.grad.abs().sum() > 0 and projections[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.teacher.parameters())


def test_bad_student_options(tiny_bert_dir, tmp_path):
    with pytest.raises(OptionError, match=r"set exactly one of .*--model.student.num_layers.*got none"):
        Distillation(teacher_path=str(tiny_bert_dir))
    with pytest.raises(OptionError, match=r"got \['--model.student.num_layers', '--model.student.layers'\]"):
        Distillation(teacher_path=str(tiny_bert_dir), student=StudentSource(num_layers=1, layers=[0]))
    with pytest.raises(OptionError, match=r"--model.loss_weights.ce=-1.0 must be >= 0"):
        LossWeights(ce=-1.0)
    with pytest.raises(FileNotFoundError, match=r"teacher_path='.*missing.ckpt': checkpoint does not exist"):
        Distillation(teacher_path=str(tmp_path / "missing.ckpt"), student=StudentSource(num_layers=1))


@pytest.mark.slow
def test_distillation_resumes_after_kill_like_an_uninterrupted_run(tiny_bert_dir, tmp_path):
    args = lambda root, overlay: tiny_run_args(tiny_bert_dir, root, "--config", str(overlay), train_batches=8,
                                               distill=True)
    whole = callbacks_overlay(tmp_path / "whole.yaml", every_n_train_steps=3)
    main(["fit", *args(tmp_path / "whole", whole)])
    killed = callbacks_overlay(tmp_path / "killed.yaml", every_n_train_steps=3,
                               extra=[{"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 5}}])
    assert run_train_py("fit", args(tmp_path / "resumed", killed), check=False).returncode != 0
    main(["fit", *args(tmp_path / "resumed", whole), "--ckpt_path", "last"])
    expected, got = final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_two_process_ddp_distillation_matches_one_process(tiny_bert_varied_dir, tmp_path):
    args = lambda root: tiny_run_args(tiny_bert_varied_dir, root, "--data.batch_size=16", train_batches=6,
                                      distill=True)
    main(["fit", *args(tmp_path / "one"), "--trainer.accelerator=cpu"])
    run_train_py("fit", [*args(tmp_path / "two"), "--config", "configs/trainer/ddp_cpu.yaml"])
    one, two = group_record(tmp_path / "one", "test"), group_record(tmp_path / "two", "test")
    assert one["teacher"].pop("ece") == pytest.approx(two["teacher"].pop("ece"), rel=1e-4)  # from float logits
    assert one["teacher"] == pytest.approx(two["teacher"], abs=1e-12)
    assert one["delta_to_teacher"] == pytest.approx(two["delta_to_teacher"], abs=1e-9)
    assert [g["n"] for g in one["groups"]] == [g["n"] for g in two["groups"]]
    assert one["avg_acc"] == pytest.approx(two["avg_acc"], abs=1e-9)
    # beyond accuracy: sums of both ranks, and per-example outcomes gathered and ordered before resampling
    for key in ("ece", "brier", "flip_rate", "kl_to_reference", "worst_group_acc_ci", "p_value"):
        assert one[key] == pytest.approx(two[key], rel=1e-4, abs=1e-6), key  # logits differ in float rounding
    for group_one, group_two in zip(one["groups"], two["groups"]):
        assert group_one.pop("group") == group_two.pop("group")
        assert group_one == pytest.approx(group_two, rel=1e-4, abs=1e-6)
    assert one["worst_group_acc_ci"][0] < one["worst_group_acc_ci"][1]


@pytest.mark.slow
def test_cached_teacher_logits_give_the_same_training(tiny_bert_varied_dir, tmp_path):
    """With all classes cached the soft targets are exact, so both runs end with the same student function.
    (Not bit-identical weights: the cache ran the teacher in batches of 128, training in batches of 32, and
    Adam turns ~1e-7 differences in gradients that are zero in exact arithmetic, like the attention key
    bias's, into learning-rate-sized steps that do not change any output.)"""
    args = lambda root, *extra: tiny_run_args(tiny_bert_varied_dir, root, "--model.loss_weights.hidden=0", *extra,
                                              train_batches=5, distill=True)
    main(["fit", *args(tmp_path / "live")])
    cache = tmp_path / "cache"
    main(["fit", *args(tmp_path / "cached", f"--model.teacher_cache_dir={cache}")])
    assert len(list(cache.glob("teacher_top3_*.pt"))) == 1
    batch = fixed_batch(tiny_bert_varied_dir)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    live, cached = (AutoModelForSequenceClassification.from_pretrained(tmp_path / run / "student").eval()
                    for run in ("live", "cached"))
    initial = Distillation(teacher_path=str(tiny_bert_varied_dir), student=StudentSource(num_layers=1)).model.eval()
    with torch.no_grad():
        live_logits, cached_logits, initial_logits = (m(**inputs).logits for m in (live, cached, initial))
    assert (live_logits - initial_logits).abs().max() > 1e-2  # training moved the student
    torch.testing.assert_close(cached_logits, live_logits, rtol=0, atol=1e-4)
    with pytest.raises(OptionError, match=r"caches logits only; --model.loss_weights \['hidden'\]"):
        Distillation(teacher_path=str(tiny_bert_varied_dir), student=StudentSource(num_layers=1),
                     loss_weights=LossWeights(hidden=1.0),
                     teacher_cache_dir=str(cache))


def test_teacher_from_a_train_py_checkpoint(tiny_bert_dir, tmp_path):
    """`--model.teacher_path` accepts the .ckpt that `train.py fit` writes for TeacherFineTune."""
    root = tmp_path / "teacher"
    main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2)])
    checkpoint = root / "checkpoints" / "last.ckpt"
    module = Distillation(teacher_path=str(checkpoint), student=StudentSource(num_layers=1))
    trained = {k.removeprefix("model."): v for k, v in final_weights(root).items() if k.startswith("model.")}
    for key, value in module.teacher.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="is not a TeacherFineTune checkpoint with num_labels=5"):
        Distillation(teacher_path=str(checkpoint), num_labels=5, student=StudentSource(num_layers=1))


def test_replacing_the_configs_student_source_is_refused_until_the_other_is_unset(tiny_bert_dir, tmp_path):
    """The shipped config copies 3 teacher blocks; a student path on top of it is two sources, refused by name
    (never one silently preferred), and the same path with the config's source unset runs."""
    config = ["--config", "configs/distill/stereoset_minilm_to_3layer.yaml", f"--model.teacher_path={tiny_bert_dir}",
              f"--data.tokenizer_path={tiny_bert_dir}"]
    # (raised in the module's __init__, which jsonargparse wraps; the command line prints the one line)
    with pytest.raises((OptionError, ValueError), match=r"got \['--model.student.num_layers', '--model.student.path'\]"):
        main(["fit", *config, f"--model.student.path={tiny_bert_dir}", "--trainer.fast_dev_run=1"])
    main(["fit", *config, f"--model.student={{path: {tiny_bert_dir}, num_layers: null}}", "--trainer.fast_dev_run=1",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
          "--trainer.logger.save_dir=."])
