"""Pruning through the real CLI and config (`train.py validate`): the record, the saved model, the methods,
the no-overwrite rule and DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lmshrink.backbones import load_sequence_classifier
from lmshrink.cli import check_args, main
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.errors import OptionError
from lmshrink.modules import Prune
from lmshrink.pruning.methods import Kwon, Wanda
from tests.card_checks import assert_card_reports
from tests.helpers import REPO, group_record, run_train_py

PRUNE_CONFIG = REPO / "configs" / "prune" / "kprune_stereoset.yaml"


def prune_args(model_dir: Path, root: Path, *extra: str) -> list[str]:
    """The shipped pruning config, shrunk: tiny model, small sample (of the method's kind), CSV logger."""
    method = next((arg.split("=", 1)[1] for arg in extra if arg.startswith("--model.method=")), "KPrune")
    sample = {"KPrune": ["--model.method.num_tokens=2000"], "Kwon": ["--model.method.num_samples=64"]}.get(method, [])
    return [
        "--config", str(PRUNE_CONFIG),
        f"--model.teacher_path={model_dir}",
        f"--data.tokenizer_path={model_dir}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir=.",
        "--trainer.enable_progress_bar=false",
        "--data.eval_batch_size=256",
        *extra,
        *sample,  # after the method: its options belong to it
    ]


def record(root: Path, stage: str = "val") -> dict:
    paths = sorted(root.rglob(f"pruning_record_{stage}*.json"))
    assert paths, f"no pruning record under {root}"
    return json.loads(paths[0].read_text())


def val_batch(model_dir: Path, size: int = 64) -> dict:
    datamodule = GroupedTextDataModule(tokenizer_path=str(model_dir))
    datamodule.setup("validate")
    items = [datamodule.datasets["val"][index] for index in range(size)]
    batch = datamodule.val_dataloader().collate_fn(items)
    return {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.mark.slow
@pytest.mark.parametrize("method, name", [("KPrune", "kprune"), ("Kwon", "kwon")])
def test_validate_prunes_slices_saves_and_records(method, name, tiny_bert_varied_dir, tmp_path):
    main(["validate", *prune_args(tiny_bert_varied_dir, tmp_path, f"--model.method={method}",
                                  "--model.method.flops_keep_ratio=0.5")])
    result = record(tmp_path)
    assert result["method"] == name and result["seq_len"] > 5
    assert result["options"]["flops_keep_ratio"] == 0.5
    assert result["flops_after"] <= 0.5 * result["flops_before"] * (1 + 1e-9)
    assert result["params_after"] < result["params_before"]
    assert len(result["heads_per_layer"]) == 2 and result["pruning_seconds"] > 0
    metrics = result["metrics"]
    assert 0 <= metrics["val/avg_acc"] <= 1 and "val/dense_avg_acc" in metrics
    assert any(key.startswith("val/delta/") for key in metrics)
    groups = group_record(tmp_path, "val")
    assert groups["avg_acc"] == pytest.approx(metrics["val/avg_acc"])
    model_dir = Path(result["model_dir"])
    assert (model_dir / "pruning_record_val.json").is_file()
    card = assert_card_reports(model_dir, groups, split="val")  # pruned vs dense, on the sliced model's card
    assert {"pruning", name} <= set(card.data.tags) and "trust_remote_code=True" in card.text
    dense_count = sum(p.numel() for p in load_sequence_classifier(tiny_bert_varied_dir, num_labels=3).parameters())
    pruned_count = sum(p.numel() for p in load_sequence_classifier(model_dir, num_labels=3).parameters())
    assert pruned_count < dense_count
    assert f"| parameters | {dense_count} | {pruned_count} | {pruned_count / dense_count:.3f} |" in card.text
    batch = val_batch(tiny_bert_varied_dir)
    ours = load_sequence_classifier(model_dir, num_labels=3).eval()
    stock = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert ours.config.lmshrink_heads_per_layer == result["heads_per_layer"]
    torch.testing.assert_close(ours(**batch).logits, stock(**batch).logits, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("method, sparsity", [("L1Unstructured", 0.6), ("L1Heads", 0.5)])
def test_magnitude_baselines(method, sparsity, tiny_bert_varied_dir, tmp_path):
    main(["validate", *prune_args(tiny_bert_varied_dir, tmp_path, f"--model.method={method}",
                                  f"--model.method.sparsity={sparsity}")])
    result = record(tmp_path)
    assert result["sample"]["batches"] == 0  # a magnitude baseline reads no data
    if method == "L1Unstructured":
        assert result["sparsity_reached"] == pytest.approx(sparsity, abs=0.01)
        assert result["flops_after"] == result["flops_before"]  # zeros do not remove structured FLOPs
    else:
        assert sum(result["heads_per_layer"]) == 4  # half of 2 x 4 heads
    model = load_sequence_classifier(result["model_dir"], num_labels=3)
    linears = [module for name, module in model.bert.encoder.named_modules() if isinstance(module, torch.nn.Linear)]
    if method == "L1Unstructured":  # the reloaded weights hold the zeros the record reports
        zeros = sum(int((linear.weight == 0).sum()) for linear in linears) / sum(l.weight.numel() for l in linears)
        assert zeros == pytest.approx(result["sparsity_reached"], abs=1e-6)
    else:  # the reloaded model has the record's heads per layer, physically
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        assert [layer.attention.self.query.out_features // head_dim for layer in model.bert.encoder.layer] == \
            result["heads_per_layer"]


def test_bad_options_are_refused_before_any_work(tiny_bert_varied_dir, tmp_path):
    with pytest.raises(OptionError, match=r"KPrune: flops_keep_ratio=1.5 must be in \(0, 1\]"):
        main(["validate", *prune_args(tiny_bert_varied_dir, tmp_path, "--model.method.flops_keep_ratio=1.5")])
    with pytest.raises(ValueError, match="num_labels=1"):
        Prune(teacher_path=str(tiny_bert_varied_dir), num_labels=1)
    with pytest.raises(OptionError, match="Wanda.* does not prune encoders"):  # a decoder method, given in Python
        Prune(teacher_path=str(tiny_bert_varied_dir), method=Wanda(sparsity=0.5))
    # an option the chosen method does not take is refused by the method's signature, not silently dropped
    with pytest.raises(TypeError, match="num_tokens"):
        Kwon(num_tokens=5000)
    for args, refused in ((["--model.method=Kwon", "--model.method.num_tokens=5000"], "num_tokens"),
                          (["--model.method=L1Heads", "--model.method.lam_rep=0.1"], "lam_rep"),
                          (["--model.method.sparsity=0.3"], "sparsity")):
        with pytest.raises(OptionError, match=f"--model.method: .*Option '{refused}' is not accepted"):
            check_args("validate", prune_args(tiny_bert_varied_dir, tmp_path, *args))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("user data")
    root = tmp_path / "run"
    with pytest.raises(FileExistsError, match="--model.save_dir='.*taken' is not empty"):  # before pruning starts
        main(["validate", *prune_args(tiny_bert_varied_dir, root, f"--model.save_dir={tmp_path / 'taken'}")])
    assert (tmp_path / "taken" / "keep.txt").read_text() == "user data"
    assert not list(root.rglob("pruning_record*")) and not list(root.rglob("config*.yaml"))


@pytest.mark.slow
def test_two_process_ddp_pruning_matches_one_process(tiny_bert_varied_dir, tmp_path):
    args = lambda root: prune_args(tiny_bert_varied_dir, root, "--model.method.flops_keep_ratio=0.4")
    main(["validate", *args(tmp_path / "one"), "--trainer.accelerator=cpu"])
    run_train_py("validate", [*args(tmp_path / "two"), "--config", "configs/trainer/ddp_cpu.yaml"])
    one, two = record(tmp_path / "one"), record(tmp_path / "two")
    assert one["heads_per_layer"] == two["heads_per_layer"]
    assert one["neurons_per_layer"] == two["neurons_per_layer"]
    # counts are summed before dividing: exact; probability-based metrics see logits that differ in float
    # rounding with the batch composition of each process
    from_probabilities = ("ece", "brier", "confidence", "kl_to")
    exact = {key: value for key, value in one["metrics"].items() if not any(word in key for word in from_probabilities)}
    assert exact == pytest.approx({key: two["metrics"][key] for key in exact}, abs=1e-9)
    assert one["metrics"] == pytest.approx(two["metrics"], rel=1e-5, abs=1e-7)
    assert len(exact) < len(one["metrics"])
