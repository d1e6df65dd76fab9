"""Token classification (NER) end to end with the real CLI and the shipped CoNLL config on a tiny random BERT:
entity F1 per group and type in the record, the exported tagger, 2-process DDP equal to one process, and a
resume after ``kill -9`` equal to the uninterrupted run."""

from __future__ import annotations

import re
import json

import pytest
import torch
from transformers import AutoModelForTokenClassification

from lmshrink.cli import main
from lmshrink.datamodules.token_tagging import CONLL2003_TAGS
from tests.card_checks import assert_card_reports
from tests.helpers import REPO, callbacks_overlay, final_weights, group_record, run_train_py

CONFIG = REPO / "configs" / "teacher" / "conll_minilm.yaml"


def tagger_args(model_dir, root, *extra: str, train_batches: int = 4) -> list[str]:
    return ["--config", str(CONFIG), f"--model.model_path={model_dir}", f"--model.export_dir={root / 'model'}",
            f"--data.tokenizer_path={model_dir}", f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.max_epochs=1", f"--trainer.limit_train_batches={train_batches}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--model.learning_rate=0.001", *extra]


def test_fit_logs_entity_f1_per_group_and_type_and_exports_a_tagger(tiny_bert_dir, tmp_path):
    root = tmp_path / "run"
    main(["fit", *tagger_args(tiny_bert_dir, root)])
    record = group_record(root, "test")
    assert record["metric"] == "f1" and [g["group"] for g in record["groups"]] == ["capitals", "normal"]
    assert sum(g["n"] for g in record["groups"]) == 57
    assert set(record["types"]) == {"LOC", "MISC", "ORG", "PER"}
    assert sum(t["support"] for t in record["types"].values()) == sum(g["entities"] for g in record["groups"])
    assert record["worst_group_f1"] == min(g["f1"] for g in record["groups"] if g["f1"] is not None)
    assert len(record["worst_group_f1_ci"]) == 2
    model = AutoModelForTokenClassification.from_pretrained(root / "model")
    assert [model.config.id2label[i] for i in range(9)] == CONLL2003_TAGS
    card = assert_card_reports(root / "model", record)  # entity F1 per group on the tagger's card
    assert card.data.pipeline_tag == "token-classification" and card.data.datasets == ["eriktks/conll2003"]
    metrics = (next(root.rglob("metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"val/f1", "val/worst_group_f1", "val/f1/capitals", "val/type_f1/PER"} <= set(metrics)


def test_a_sequence_model_with_tagging_data_is_refused_by_name(tiny_bert_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *tagger_args(tiny_bert_dir, tmp_path / "run"), "--model.task=sequence"], exit_on_error=True)
    assert ("--model.task=sequence but TokenTaggingDataModule is token classification; set --model.task=token"
            in capsys.readouterr().err)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_bert_no_dropout_dir, tmp_path):
    args = lambda root: tagger_args(tiny_bert_no_dropout_dir, root, "--data.batch_size=16", "--data.eval_batch_size=8")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    main(["fit", *args(single), "--trainer.accelerator=cpu"])
    run_train_py("fit", [*args(ddp), "--config", "configs/trainer/ddp_cpu.yaml"])
    for stage in ("val", "test"):
        one, two = group_record(single, stage), group_record(ddp, stage)
        for key in ("f1", "precision", "recall", "worst_group_f1", "macro_f1"):
            assert one[key] == pytest.approx(two[key], abs=1e-9), key
        assert json.dumps(one["types"]) == json.dumps(two["types"])
        for a, b in zip(one["groups"], two["groups"]):
            assert (a["group"], a["n"], a["entities"]) == (b["group"], b["n"], b["entities"])
            assert a["f1"] == pytest.approx(b["f1"], abs=1e-9)
            assert a["ci_low"] == pytest.approx(b["ci_low"], abs=1e-9)  # same sentences, same order: same bootstrap


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tiny_bert_dir, tmp_path):
    overlay = lambda name, extra=None: callbacks_overlay(tmp_path / name, every_n_train_steps=3, extra=extra,
                                                         monitor="val/worst_group_f1")
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    main(["fit", *tagger_args(tiny_bert_dir, uninterrupted, "--config", str(overlay("plain.yaml")), train_batches=8)])
    killer = [{"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 5}}]
    proc = run_train_py("fit", tagger_args(tiny_bert_dir, resumed, "--config", str(overlay("kill.yaml", killer)),
                                           train_batches=8), check=False)
    assert proc.returncode != 0, "the run was meant to die mid-epoch"
    main(["fit", *tagger_args(tiny_bert_dir, resumed, "--config", str(overlay("plain.yaml")), train_batches=8),
          "--ckpt_path", "last"])
    expected, got = final_weights(uninterrupted), final_weights(resumed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    assert group_record(resumed, "test") | {"global_step": None} == group_record(uninterrupted, "test") | {"global_step": None}


def test_quantize_compares_the_tagger_with_its_float_self_per_group(tiny_tagger_dir, tmp_path):
    root = tmp_path / "q"
    main(["test", *tagger_args(tiny_tagger_dir, root), "--trainer.callbacks+=lmshrink.callbacks.Quantize",
          "--trainer.callbacks.scheme=dynamic-int8", "--trainer.callbacks.latency_repeats=2"])
    (path,) = root.rglob("quantization_dynamic-int8_test.json")
    record, measured = json.loads(path.read_text()), group_record(root, "test")  # GroupMetrics saw the int8 model
    assert record["metric"] == "f1" and record["reference_name"] == "float"
    assert record["f1"] == pytest.approx(measured["f1"], abs=1e-12) and 0 < record["float"]["f1"] < 1
    for quantized, seen in zip(record["groups"], measured["groups"]):
        assert quantized["f1"] == pytest.approx(seen["f1"], abs=1e-12)
        assert quantized["delta_to_reference"] == pytest.approx(quantized["f1"] - quantized["reference_f1"], abs=1e-12)
        assert 0 <= quantized["p_holm"] <= 1
    assert record["size_latency"]["quantized"]["memory_mb"] < record["size_latency"]["float"]["memory_mb"]


PRUNE_CONFIG = REPO / "configs" / "prune" / "kprune_conll.yaml"


@pytest.mark.parametrize("method, extra", [("KPrune", ["--model.method.num_tokens=2000"]),
                                           ("Kwon", ["--model.method.num_samples=64"]),
                                           ("L1Heads", ["--model.method.sparsity=0.5"]),
                                           ("L1Unstructured", ["--model.method.sparsity=0.5"])])
def test_pruning_a_tagger_reports_entity_f1_against_the_dense_tagger_and_saves_a_reloadable_one(
        tiny_tagger_dir, tmp_path, method, extra):
    root = tmp_path / method
    main(["validate", "--config", str(PRUNE_CONFIG), f"--model.teacher_path={tiny_tagger_dir}",
          f"--model.method={method}", *extra, f"--data.tokenizer_path={tiny_tagger_dir}",
          f"--trainer.default_root_dir={root}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
          "--trainer.logger.save_dir=.", "--trainer.enable_progress_bar=false"])
    record = group_record(root, "val")
    assert record["metric"] == "f1" and record["reference_name"] == "dense" and 0 < record["dense"]["f1"] < 1
    pruning = json.loads(next(root.rglob("pruning_record_val.json")).read_text())
    if method in ("KPrune", "Kwon"):
        assert pruning["flops_kept"] <= 0.5 + 1e-9
        assert pruning["sample"]["tokens"] > pruning["sample"]["sentences"]
    model = AutoModelForTokenClassification.from_pretrained(pruning["model_dir"], trust_remote_code=True)
    if method == "L1Unstructured":  # masked in place: a dense model with half its encoder weights zero
        assert type(model).__name__ == "BertForTokenClassification" and pruning["sparsity_reached"] >= 0.5 - 1e-3
    else:
        assert type(model).__name__ == "PrunedBertForTokenClassification"
        assert model.config.lmshrink_heads_per_layer == pruning["heads_per_layer"]
    assert [model.config.id2label[i] for i in range(9)] == CONLL2003_TAGS


DISTILL_CONFIG = REPO / "configs" / "distill" / "conll_minilm_to_3layer.yaml"


def test_distilling_a_tagger_measures_the_student_against_the_teacher_per_group(tiny_tagger_dir, tmp_path):
    root = tmp_path / "distill"
    main(["fit", "--config", str(DISTILL_CONFIG), f"--model.teacher_path={tiny_tagger_dir}",
          "--model.student.num_layers=1", f"--model.student_save_dir={root / 'student'}",
          f"--data.tokenizer_path={tiny_tagger_dir}", f"--trainer.default_root_dir={root}",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
          "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.log_every_n_steps=1",
          "--trainer.enable_progress_bar=false"])
    record = group_record(root, "test")
    assert record["metric"] == "f1" and record["reference_name"] == "teacher"
    teacher = record["teacher"]
    assert 0 < teacher["f1"] < 1 and record["f1"] != teacher["f1"]
    for group in record["groups"]:
        assert group["delta_to_reference"] == pytest.approx(group["f1"] - group["reference_f1"], abs=1e-12)
    student = AutoModelForTokenClassification.from_pretrained(root / "student")
    assert student.config.num_hidden_layers == 1 and student.config.id2label[1] == "B-PER"
    columns = (next(root.rglob("metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"train/kd_loss", "train/ce_loss", "train/hidden_loss", "val/delta/capitals", "val/teacher_f1"} <= set(columns)


def test_the_masakhaner_overlay_groups_by_language(tiny_bert_dir, tmp_path):
    from tests.datamodules.test_token_tagging import masakhaner_dir

    root = tmp_path / "run"
    main(["fit", *tagger_args(tiny_bert_dir, root, train_batches=1), "--config",
          str(REPO / "configs" / "data" / "masakhaner.yaml"), f"--data.dataset={masakhaner_dir(tmp_path / 'mner')}",
          "--data.batch_size=4"])
    record = group_record(root, "test")
    assert [group["group"] for group in record["groups"]] == ["hau", "yor"]
    assert set(record["types"]) == {"DATE", "LOC", "ORG", "PER"}
    assert [group["entities"] for group in record["groups"]] == [6, 6]


def test_pruning_a_sequence_classifier_with_tagging_data_is_refused_before_any_work(tiny_bert_dir, tmp_path, capsys):
    root = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(["validate", "--config", str(PRUNE_CONFIG), f"--model.teacher_path={tiny_bert_dir}",
              f"--data.tokenizer_path={tiny_bert_dir}", f"--trainer.default_root_dir={root}"], exit_on_error=True)
    error = capsys.readouterr().err
    # the sequence classifier's 3-class head cannot read the data's 9 tags: refused when it loads, naming it
    assert re.search(r"error: teacher_path='.*' has a 3-class head but the data has 9 classes", error)
    assert not root.exists()
