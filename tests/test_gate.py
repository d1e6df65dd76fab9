"""The CI gate: its rule on constructed records, and its exit code on a constructed pair of models (one that
loses a class, so some groups drop significantly; one identical to the reference)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lmshrink.cards import start_card, weights_digest
from lmshrink.cli import main
from lmshrink.gate import cli
from lmshrink.metrics.gate_rule import GateThresholds, gate_failures
from tests.card_checks import assert_card_reports
from tests.helpers import REPO, group_record, tiny_run_args


def record(groups: list[tuple[str, int, float, float, float]], reference_worst: float) -> dict:
    """groups: (name, n, accuracy, reference accuracy, p_holm)."""
    rows = [{"group": name, "n": n, "accuracy": acc, "reference_accuracy": ref, "delta_to_reference": acc - ref,
             "p_holm": p} for name, n, acc, ref, p in groups]
    return {"reference_name": "teacher", "teacher": {"worst_group_acc": reference_worst},
            "worst_group_acc": min(acc for _, _, acc, _, _ in groups), "groups": rows}


def test_only_large_and_significant_drops_fail():
    thresholds = GateThresholds(max_worst_group_drop=0.02, max_group_drop=0.05, alpha=0.05)
    # a: large, significant -> fails; b: large but within a small group's noise -> passes; c: significant, small
    failures = gate_failures(record([("a", 200, 0.70, 0.80, 0.001), ("b", 12, 0.50, 0.75, 0.40),
                                     ("c", 500, 0.88, 0.90, 0.01)], reference_worst=0.75), thresholds)
    assert len(failures) == 1 and failures[0].startswith("group a: accuracy 0.8000 -> 0.7000")
    # worst group 0.75 -> 0.50 (b): over the threshold but b's change is not significant -> no worst-group failure
    assert not any(line.startswith("worst group") for line in failures)
    significant_worst = record([("a", 200, 0.79, 0.80, 0.5), ("b", 300, 0.60, 0.64, 0.01)], reference_worst=0.64)
    assert [line.split(":")[0] for line in gate_failures(significant_worst, thresholds)] == ["worst group"]
    assert gate_failures(record([("a", 50, 0.9, 0.9, 1.0)], 0.9), thresholds) == []
    with pytest.raises(ValueError, match="compares no reference"):
        gate_failures({"groups": []}, thresholds)
    with pytest.raises(ValueError, match="alpha=1.5"):
        GateThresholds(alpha=1.5)


@pytest.fixture(scope="module")
def models(tiny_bert_varied_dir, tmp_path_factory):
    """The reference, an identical candidate, and a candidate that never predicts class 0 (stereotype)."""
    directory = tmp_path_factory.mktemp("gate_models")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_varied_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_varied_dir)
    with torch.no_grad():
        model.classifier.bias[0] -= 100
    model.save_pretrained(directory / "no_class_0")
    tokenizer.save_pretrained(directory / "no_class_0")
    return tiny_bert_varied_dir, directory / "no_class_0"


def gate_args(reference, candidate, output, *extra) -> list[str]:
    return ["--reference", str(reference), "--candidate", str(candidate), "--config",
            str(REPO / "configs/teacher/stereoset_minilm.yaml"), "--output-dir", str(output), *extra, "--",
            f"--data.tokenizer_path={reference}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=.", "--trainer.enable_progress_bar=false", "--data.eval_batch_size=256"]


@pytest.mark.slow
def test_gate_exit_codes_on_constructed_models(models, tmp_path, capsys):
    reference, no_class_0 = models
    assert cli(gate_args(reference, no_class_0, tmp_path / "worse")) == 1
    out = capsys.readouterr().out
    assert "gate FAILED" in out and "group stereotype|race: accuracy" in out
    verdict = json.loads(next((tmp_path / "worse").rglob("gate.json")).read_text())
    assert not verdict["passed"] and all("stereotype|" in line or "worst" in line for line in verdict["failures"])
    # the same candidate passes when only drops above 50 points count: its drops (<= 19 points) are accepted
    assert cli(gate_args(reference, no_class_0, tmp_path / "loose", "--max-group-drop", "0.5",
                         "--max-worst-group-drop", "0.5")) == 0
    assert cli(gate_args(reference, reference, tmp_path / "same")) == 0
    assert "gate passed" in capsys.readouterr().out
    assert cli(gate_args(reference, no_class_0, tmp_path / "bad", "--alpha", "2")) == 2
    assert "error: --alpha=2.0 must be in (0, 1)" in capsys.readouterr().err
    assert cli(gate_args(reference, tmp_path / "no_such_model", tmp_path / "typo")) == 2
    assert f"error: --candidate='{tmp_path / 'no_such_model'}': no such local directory" in capsys.readouterr().err


def test_gate_as_a_group_metrics_option_fails_the_test_run(models, tmp_path, capsys):
    reference, no_class_0 = models
    overlay = tmp_path / "gate_callbacks.yaml"
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": [{
        "class_path": "lmshrink.callbacks.GroupMetrics",
        "init_args": {"gate": {"max_group_drop": 0.05}}}]}}))
    args = ["test", "--config", str(REPO / "configs/teacher/stereoset_minilm.yaml"), "--config", str(overlay),
            "--model=lmshrink.modules.Compare",
            f"--model.model_path={no_class_0}", f"--model.reference_path={reference}",
            f"--data.tokenizer_path={reference}", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.enable_progress_bar=false", "--data.eval_batch_size=256"]
    with pytest.raises(SystemExit) as exit_info:
        main(args, exit_on_error=True)
    assert exit_info.value.code == 1
    assert "gate FAILED:\n  group stereotype|" in capsys.readouterr().err


def test_gate_reads_entity_f1_records_of_taggers():
    record = {"metric": "f1", "reference_name": "teacher", "f1": 0.7, "worst_group_f1": 0.40,
              "teacher": {"f1": 0.8, "worst_group_f1": 0.55},
              "groups": [{"group": "capitals", "n": 7, "f1": 0.40, "reference_f1": 0.55, "delta_to_reference": -0.15,
                          "p_holm": 0.30},
                         {"group": "normal", "n": 50, "f1": 0.72, "reference_f1": 0.90, "delta_to_reference": -0.18,
                          "p_holm": 0.002},
                         {"group": "empty", "n": 3, "f1": None, "reference_f1": None, "delta_to_reference": None,
                          "p_holm": None}]}
    failures = gate_failures(record, GateThresholds())
    assert failures == ["group normal: f1 0.9000 -> 0.7200 (drop 0.1800 > 0.05, Holm p = 0.002 < 0.05, n = 50)"]
    record["groups"][0]["p_holm"] = 0.01  # the worst group's drop becomes significant too
    assert len(gate_failures(record, GateThresholds())) == 3


def compare_args(candidate, reference, root, *extra) -> list[str]:
    return ["test", "--config", str(REPO / "configs/teacher/stereoset_minilm.yaml"), "--model=lmshrink.modules.Compare",
            f"--model.model_path={candidate}", f"--model.reference_path={reference}",
            f"--data.tokenizer_path={reference}", f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.enable_progress_bar=false", "--data.eval_batch_size=256", *extra]


@pytest.mark.slow
def test_a_later_test_and_the_gate_put_their_numbers_on_the_candidates_card(models, tmp_path):
    reference, no_class_0 = models
    candidate = tmp_path / "candidate"
    model = AutoModelForSequenceClassification.from_pretrained(no_class_0)
    model.save_pretrained(candidate)
    AutoTokenizer.from_pretrained(no_class_0).save_pretrained(candidate)
    start_card(candidate, "classifier", {"parent": str(reference), "method": "A test model", "dataset": "stereoset"},
               {"trust_remote_code": False, "quantized": None}, weights_digest(model))
    unmeasured = (candidate / "README.md").read_text()
    # a quantized evaluation of the directory measures other weights: nothing of it goes on the card
    main(["test", *tiny_run_args(candidate, tmp_path / "quantized"), "--trainer.callbacks+=lmshrink.callbacks.Quantize",
          "--trainer.callbacks.scheme=dynamic-int8", "--trainer.callbacks.latency_repeats=1"])
    assert (candidate / "README.md").read_text() == unmeasured
    # a plain test of the directory: its record goes on the card (the loaded weights have the saved digest)
    main(compare_args(candidate, reference, tmp_path / "compare"))
    assert_card_reports(candidate, group_record(tmp_path / "compare", "test"))
    # the gate: its record and its verdict
    assert cli(gate_args(reference, candidate, tmp_path / "gate")) == 1
    verdict = json.loads(next((tmp_path / "gate").rglob("gate.json")).read_text())
    card = assert_card_reports(candidate, json.loads(open(verdict["record"]).read()))
    gate_section = card.text.split("## Gate", 1)[1].split("##", 1)[0]
    assert "**failed**" in gate_section and verdict["failures"][0] in gate_section
