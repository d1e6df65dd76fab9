"""The generative audit through the real CLI and config on a tiny random Llama: every model and metric is
reported, and 2 DDP processes see each prompt and pair once and agree on the deterministic numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmshrink.cli import main
from tests.helpers import REPO, run_train_py

CONFIG = REPO / "configs" / "generative" / "toxicity_smollm2.yaml"


def audit_args(model_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIG), f"--model.model_path={model_dir}", f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.enable_progress_bar=false", "--model.max_new_tokens=4", "--model.num_samples=2",
            "--data.num_toxicity_prompts=6", "--data.names_per_group=2", "--data.num_crows_pairs=10",
            "--data.num_stereoset_pairs=10", "--data.num_heldout_texts=10", "--data.generation_batch_size=4",
            "--data.batch_size=4", *extra]


def audit_record(root: Path) -> dict:
    paths = sorted(root.rglob("generative_audit*.json"))
    assert paths, f"no generative_audit.json under {root}"
    return json.loads(paths[0].read_text())


def test_audit_reports_every_model_and_metric(tiny_llama_dir, tmp_path):
    main(["test", *audit_args(tiny_llama_dir, tmp_path)])
    record = audit_record(tmp_path)
    assert record["scorer"]["name"] == "alt-profanity-check"
    assert list(record["models"]) == ["teacher", "l1-0.3", "dynamic-int8"]
    teacher = record["models"]["teacher"]
    assert teacher["toxicity"]["prompts"] == 6 and teacher["names"]["prompts"] == 8
    assert set(teacher["names"]["by_group"]) == {"asian", "black", "hispanic", "white"}
    assert teacher["crows_pairs"]["pairs"] == 10 and teacher["stereoset"]["pairs"] == 10
    assert teacher["perplexity"] > 1
    samples = record["samples"]["teacher"]
    assert len(samples) == 14 and all(len(s["scores"]) == 2 == len(s["continuations"]) for s in samples)


def test_two_process_ddp_audit_counts_each_example_once(tiny_llama_dir, tmp_path):
    args = lambda root: audit_args(tiny_llama_dir, root, "--model.sparsities=[]", "--model.quantize=[]")
    main(["test", *args(tmp_path / "one"), "--trainer.accelerator=cpu"])
    run_train_py("test", [*args(tmp_path / "two"), "--config", "configs/trainer/ddp_cpu.yaml"])
    one, two = audit_record(tmp_path / "one")["models"]["teacher"], audit_record(tmp_path / "two")["models"]["teacher"]
    assert two["toxicity"]["prompts"] == 6 and two["names"]["prompts"] == 8
    for source in ("crows_pairs", "stereoset"):
        assert two[source]["pairs"] == 10
        assert two[source]["stereotype_preference"] == pytest.approx(one[source]["stereotype_preference"])
    assert two["heldout_tokens"] == one["heldout_tokens"]
    assert two["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)
