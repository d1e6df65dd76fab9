"""The study end to end on a tiny random model (teacher + K-prune over 2 seeds): the report's numbers equal the
stage records, a killed study resumes without recomputing finished stages, and results from different test
sets are refused."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from lmshrink.study import runner
from lmshrink.study.__main__ import main as study_main
from lmshrink.study.report import aggregate, check_same_eval_set
from lmshrink.study.spec import load_spec
from tests.card_checks import assert_card_reports
from tests.helpers import REPO, run_python_here


def write_study(tmp_path: Path, model_dir: Path, precision: str = "32-true") -> Path:
    spec = {
        "output_dir": str(tmp_path / "study"),
        "seeds": [0, 1],
        "precision": precision,
        "common_args": [f"--data.tokenizer_path={model_dir}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                        "--trainer.logger.save_dir=.", "--trainer.enable_progress_bar=false",
                        "--data.eval_batch_size=512"],
        "stages": [
            {"name": "teacher", "kind": "teacher", "config": "configs/teacher/stereoset_minilm.yaml", "seeded": False,
             "args": [f"--model.model_path={model_dir}", "--trainer.limit_train_batches=3",
                      "--trainer.val_check_interval=1.0", "--trainer.limit_val_batches=2"]},
            {"name": "kprune", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
             "args": ["--model.method.num_tokens=1500", "--model.method.flops_keep_ratio=0.5"]},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_study_runs_reports_and_resumes(tiny_bert_varied_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_bert_varied_dir, precision="bf16-mixed")
    study = tmp_path / "study"
    # 1) start, and kill the whole study while the second stage runs
    process = subprocess.Popen([sys.executable, "-m", "lmshrink.study", str(config)], cwd=REPO,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (study / "kprune" / "seed0" / "train.log").exists():
        assert process.poll() is None and time.time() < deadline, "the study ended before reaching stage 2"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    teacher_result = study / "teacher" / "once" / "result.json"
    assert teacher_result.is_file() and not (study / "kprune" / "seed0" / "result.json").exists()
    finished_at = teacher_result.stat().st_mtime_ns
    # 2) rerun: the teacher is not recomputed, the rest completes, the report is written (its train.py runs in this
    # process: the subprocess path ran above)
    monkeypatch.setattr(runner, "run_python", run_python_here)
    assert study_main([str(config)]) == 0
    assert teacher_result.stat().st_mtime_ns == finished_at
    assert "[lmshrink] precision: bf16-mixed on " in (study / "teacher" / "once" / "train.log").read_text()
    assert (study / "teacher" / "once" / "train.log").read_text().count("$ train.py") == 2  # fit + eval, once
    assert not list((study / "teacher" / "once" / "run").rglob("group_metrics_test*.json"))  # tested once, by eval
    pruning = json.loads(next((study / "kprune" / "seed0" / "run").rglob("pruning_record_val*.json")).read_text())
    assert pruning["score_precision"] == "bf16"  # a bf16 study ranks K-prune's units in bf16
    report = study / "report"
    assert {p.name for p in report.iterdir()} >= {"report.md", "results.jsonl", "worst_vs_avg.png",
                                                   "accuracy_vs_gflops.png", "accuracy_vs_size_mb.png",
                                                   "group_delta_heatmap.png", "reliability.png"}
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["seed"]) for r in results] == [("teacher", None), ("kprune", 0), ("kprune", 1)]
    # the report's numbers are the stage records' numbers
    for result in results:
        run = study / result["stage"] / ("once" if result["seed"] is None else f"seed{result['seed']}")
        record = json.loads(next((run / "eval").rglob("group_metrics_test*.json")).read_text())
        assert result["avg_acc"] == record["avg_acc"] and result["worst_group_acc"] == record["worst_group_acc"]
        assert result["eval_set"] == record["eval_set"] is not None
        assert result["run_precision"] == record["run_precision"] == "bf16-mixed"  # built and evaluated in bf16 autocast
        assert_card_reports(Path(result["model_dir"]), record)  # each model's card holds the study's measurement
    # compressed models are evaluated against the teacher on the same examples: paired deltas and tests
    for result in results[1:]:
        record = json.loads(next((study / "kprune" / f"seed{result['seed']}" / "eval").rglob(
            "group_metrics_test*.json")).read_text())
        assert record["reference_name"] == "teacher" and result["flip_rate"] == record["flip_rate"]
        for name, group in result["groups"].items():
            teacher_group = results[0]["groups"][name]
            if group["accuracy"] is not None:
                assert group["delta_to_reference"] == pytest.approx(group["accuracy"] - teacher_group["accuracy"])
                assert 0 <= group["p_holm"] <= 1
    assert results[0]["flip_rate"] is None and results[0]["ece"] is not None
    # both comparisons with the one teacher, in one precision, kept its logits in one file beside its run
    kept = sorted((study / "teacher" / "once" / "reference_logits").iterdir())
    assert [path.name.split(".")[-2:] for path in kept] == [["rank0", "pt"]]
    rows = aggregate(results)
    kprune = [r for r in results if r["stage"] == "kprune"]
    assert rows[1]["avg_acc"] == pytest.approx(sum(r["avg_acc"] for r in kprune) / 2)
    assert rows[1]["gflops"] < rows[0]["gflops"] and rows[1]["params"] < rows[0]["params"]
    markdown = (report / "report.md").read_text()
    assert f"{rows[1]['avg_acc']:.4f}" in markdown and "Who pays (significant changes only)" in markdown
    assert "| ECE | flips |" in markdown
    assert f"bf16-mixed on {results[0]['cpu']}" in markdown
    assert "- **kprune**: [seed 0](../kprune/seed0/run/model/README.md), [seed 1](../kprune/seed1/run/model/README.md)" \
        in markdown.split("## Model cards", 1)[1]
    # 3) a third run recomputes nothing
    before = {p: p.stat().st_mtime_ns for p in study.rglob("result.json")}
    assert study_main([str(config)]) == 0
    assert {p: p.stat().st_mtime_ns for p in study.rglob("result.json")} == before


def test_report_refuses_different_test_sets():
    base = {"kind": "teacher", "from": None, "scheme": None, "groups": {"g": {"n": 1, "accuracy": 1.0}},
            "avg_acc": 1.0, "worst_group_acc": 1.0}
    results = [base | {"stage": "teacher", "seed": None, "eval_set": "aaaa"},
               base | {"stage": "other", "seed": 0, "eval_set": "bbbb"}]
    with pytest.raises(ValueError, match="different .*test sets.*other/seed=0"):
        aggregate(results)
    assert check_same_eval_set(results[:1]) == "aaaa"


@pytest.mark.parametrize("text, message", [
    ("output_dir: x\nseeds: 3\nstages: []\n", r"seeds must be a list of integers, e.g. \[0, 1, 2\], got 3"),
    ("output_dir: x\nstages:\n  - {name: teacher, kind: teacher\n", r"bad.yaml: line \d+ is not valid YAML"),
    ("- output_dir: x\n", r"expected a mapping of keys \(output_dir, seeds, stages, ...\), got a list"),
    ("output_dir: x\ncommon_args: --trainer.devices=2\nstages: []\n", r"common_args must be a list of options"),
    ("output_dir: x\nwandb: lmshrink\nstages: []\n", r"wandb must be a mapping"),
], ids=["seeds-as-number", "yaml-syntax", "top-level-list", "args-as-string", "wandb-as-string"])
def test_a_study_config_of_the_wrong_shape_is_one_line(text, message, tmp_path, capsys):
    """Issue 28: ``seeds: 3`` was a TypeError traceback; each field's type is checked as the config is read."""
    from lmshrink.study.__main__ import cli

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli([str(path)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: study config ") and re.search(message, errors[0]), errors


def test_an_output_dir_that_is_a_file_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch):
    from lmshrink.study.__main__ import cli

    monkeypatch.chdir(REPO)
    taken = tmp_path / "results.txt"
    taken.write_text("a user's file\n")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(taken), "stages": [
        {"name": "teacher", "kind": "teacher", "config": "configs/teacher/stereoset_minilm.yaml"}]}))
    assert cli([str(path)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"error: study config {path}: output_dir {str(taken)!r} is a file; name a directory (new or a "
                      f"study's)"]
    assert taken.read_text() == "a user's file\n"


@pytest.mark.parametrize("task, stages, refused", [
    ("classification", [{"name": "teacher", "kind": "teacher", "config": "configs/teacher/stereoset_minilm.yaml"},
                        {"name": "int8", "kind": "quantize", "from": "teacher", "scheme": "dynamic-int8",
                         "args": ["--data.batch_size=8"]}], r"stages\[1\] \(int8\): a classification quantize"),
    ("generative", [{"name": "teacher", "kind": "teacher", "model": "smollm2", "args": ["--model.top_p=0.5"]}],
     r"stages\[0\] \(teacher\): a generative teacher"),
], ids=["quantize", "generative-teacher"])
def test_args_of_a_stage_without_a_build_run_are_refused(task, stages, refused, tmp_path, capsys, monkeypatch):
    """A quantize stage (and a generative teacher) has no build run: its ``args`` were silently dropped, so a user's
    evaluation option never reached the evaluation. They are refused, pointing to ``eval_args``."""
    from lmshrink.study.__main__ import cli

    monkeypatch.chdir(REPO)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "task": task, "stages": stages,
                                    "eval_config": "configs/generative/study_smollm2.yaml"}))
    assert cli([str(path)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and re.search(refused + r" stage has no build run, so its 'args' would be ignored; "
                                          r"options of its evaluation go in the study's eval_args", errors[0]), errors
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_run_that_refuses_its_model_is_one_line(tiny_llama_dir, tiny_bert_dir, tmp_path, capsys, monkeypatch):
    """A causal LM as the teacher is refused by the study's check, before any stage, from its config alone; a
    mistake found only when the stage loads its model (here: a directory without weights) is refused by train.py,
    and the study prints train.py's own error line and the log, not a traceback."""
    from lmshrink.study.__main__ import cli

    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_bert_dir)
    spec = yaml.safe_load(config.read_text())
    spec["stages"][0]["args"] = [f"--model.model_path={tiny_llama_dir}", *spec["stages"][0]["args"][1:]]
    config.write_text(yaml.safe_dump(spec))
    assert cli([str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and re.search(r"stage 'teacher' \(fit\): --model.model_path='.*' is a causal LM "
                                          r"\(LlamaForCausalLM\)", errors[0]), errors
    assert not (tmp_path / "study").exists()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    spec["stages"][0]["args"][0] = f"--model.model_path={no_weights}"
    config.write_text(yaml.safe_dump(spec))
    assert cli([str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: train.py fit (") and "weights" in errors[0], errors


def test_bad_study_configs_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "x", "stages": [
        {"name": "teacher", "kind": "teacher", "config": "configs/teacher/stereoset_minilm.yaml"},
        {"name": "p", "kind": "prune", "from": "nowhere", "config": "configs/prune/kprune_stereoset.yaml"}]}))
    with pytest.raises(ValueError, match=r"stages\[1\] \(p\): 'from: nowhere'"):
        load_spec(path)
    path.write_text(yaml.safe_dump({"output_dir": "x", "stages": [
        {"name": "teacher", "kind": "teacher", "config": "configs/teacher/stereoset_minilm.yaml"},
        {"name": "q", "kind": "quantize", "from": "teacher"}]}))
    with pytest.raises(ValueError, match="a classification quantize stage needs 'scheme'"):
        load_spec(path)


def test_list_gives_one_line_per_run_with_its_depth(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    """What scripts/slurm/submit_study.sh turns into one array job per depth."""
    monkeypatch.chdir(REPO)
    assert study_main([str(write_study(tmp_path, tiny_bert_dir)), "--list"]) == 0
    assert capsys.readouterr().out.split("\n")[:3] == ["0 teacher ", "1 kprune 0", "1 kprune 1"]


@pytest.mark.parametrize("bad_stage, pattern", [
    ({"name": "int3", "kind": "quantize", "from": "teacher", "scheme": "int3"},
     r"error: study config .*: stage 'int3': scheme 'int3' is unknown; choose one of \['bf16', 'bnb-fp4'"),
    ({"name": "kp", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
      "args": ["--model.flops_keep_raito=0.5"]},
     r"error: study config .*: stage 'kp' \(validate\): --model: 'lmshrink.modules.Prune': Option 'flops_keep_raito' "
     r"is not accepted"),
    ({"name": "kp", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
      "args": ["--model.method=KPrun"]},
     r"error: study config .*: stage 'kp' \(validate\): --model.method: .*KPrun"),
    ({"name": "kp", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
      "args": ["--model.method=L1Heads", "--model.method.num_tokens=500"], "seeded": False},
     r"error: study config .*: stage 'kp' \(validate\): --model.method: 'lmshrink.pruning.methods.L1Heads': Option "
     r"'num_tokens' is not accepted"),
    ({"name": "kp", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
      "args": ["--model.teacher_path=/no/such/teacher"]},  # a model the study does not make must exist now
     r"error: study config .*: stage 'kp' \(validate\): --model.teacher_path='/no/such/teacher': no such local "
     r"directory"),
    ({"name": "kp", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
      "args": "--model.method.flops_keep_ratio=0.5"},  # a string, not a list: it was split into characters
     r"error: study config .*: stages\[2\]: args must be a list of options such as \[--sequences=16\], got "
     r"'--model.method.flops_keep_ratio=0.5'"),
    ({"name": "kp", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_stereoset.yaml",
      "args": ["--data.test_file=/no/such/test.csv"]},
     r"error: study config .*: stage 'kp' \(validate\): --data.test_file='/no/such/test.csv': no such file"),
], ids=["scheme", "option-typo", "method-typo", "ignored-option", "missing-model",
        "args-as-string", "missing-data-file"])
@pytest.mark.slow
def test_a_bad_later_stage_fails_before_the_first_stage_runs(bad_stage, pattern, tiny_bert_dir, tmp_path, monkeypatch,
                                                              capsys):
    from lmshrink.study.__main__ import cli

    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_bert_dir)
    spec = yaml.safe_load(config.read_text())
    spec["stages"].append(bad_stage)
    config.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    assert cli([str(config)]) == 2
    assert time.perf_counter() - start < 60
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), errors
    assert not (tmp_path / "study").exists(), "nothing may run (or be written) before the whole study is checked"


@pytest.mark.parametrize("shipped, title, metric", [("study", "stereoset_minilm", "accuracy"),
                                                     ("study_bf16", "stereoset_minilm_bf16", "accuracy"),
                                                     ("study_time/auto", "study", "accuracy"),
                                                     ("study_time_epyc/auto", "study", "accuracy"),
                                                     ("study_time_epyc_2452409/auto", "study", "accuracy"),
                                                     ("study_group_by_length", "stereoset_minilm_group_by_length",
                                                      "accuracy"),
                                                     ("study_conll", "conll_minilm", "f1")])
def test_report_only_rebuilds_from_a_results_file_without_running(shipped, title, metric, tiny_bert_dir, tmp_path,
                                                                  monkeypatch):
    """The shipped reports (docs/results/study: StereoSet, accuracy; docs/results/study_conll: CoNLL NER, entity F1) are exactly
    what the report code makes of their results.jsonl."""
    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_bert_dir)
    assert study_main([str(config), "--report-only", str(REPO / "docs" / "results" / shipped / "results.jsonl")]) == 0
    report = tmp_path / "study" / "report"
    assert (report / "report.md").read_text() == (REPO / "docs" / "results" / shipped / "report.md").read_text().replace(
        f"Who pays? {title}", "Who pays? study")
    assert "- **dynamic-int8**" in (report / "report.md").read_text()  # its predictions depend on the batching
    assert {p.name for p in report.glob("*.png")} >= {f"{metric}_vs_size_mb.png", f"{metric}_vs_gflops.png"}
    assert not list((tmp_path / "study").glob("*/*/run"))  # nothing ran


def test_report_marks_only_changes_significant_in_every_seed():
    from lmshrink.study.report import markdown

    def result(stage, seed, groups, flip=None):
        return {"stage": stage, "kind": "prune" if flip is not None else "teacher", "from": None, "scheme": None,
                "seed": seed, "eval_set": "same", "avg_acc": 0.7, "worst_group_acc": 0.5, "params": 1e6,
                "size_mb": 4.0, "gflops": 1.0, "latency_ms": 2.0, "ece": 0.1, "flip_rate": flip, "groups": groups}

    teacher = {"a": {"n": 100, "accuracy": 0.8}, "b": {"n": 20, "accuracy": 0.6}}
    pruned = lambda seed, p_b: {
        "a": {"n": 100, "accuracy": 0.7, "delta_to_reference": -0.1 - seed / 100, "p_holm": 0.001,
              "delta_ci_low": -0.15, "delta_ci_high": -0.05},
        "b": {"n": 20, "accuracy": 0.5, "delta_to_reference": -0.1, "p_holm": p_b, "delta_ci_low": -0.3,
              "delta_ci_high": 0.1}}
    results = [result("teacher", None, teacher), result("pruned", 0, pruned(0, 0.01), 0.2),
               result("pruned", 1, pruned(1, 0.4), 0.3)]
    rows = aggregate(results)
    assert rows[1]["delta"]["a"] == pytest.approx(-0.105) and rows[1]["delta_std"]["a"] == pytest.approx(0.00707, abs=1e-4)
    assert rows[1]["significant"] == {"a": True, "b": False}  # b: significant in one seed of two only
    text = markdown(rows, "same", "t")
    assert "| pruned | **-10.5*** | -10.0 |" in text
    assert "- **pruned**: a -10.5 [-15.0, -5.0] [-15.0, -5.0]" in text and "b -10.0" not in text.split("Who pays")[1]
    assert "| 0.2500 ± 0.0707 |" in text  # the mean flip rate over seeds
    assert "compiled" not in text
    assert "every model compiled (torch.compile" in markdown(aggregate([dict(r, latency_compiled=True)
                                                                       for r in results]), "same", "t")


@pytest.mark.slow
def test_an_unseeded_stage_of_a_seeded_teacher_gets_no_seed_option(tiny_bert_dir, tmp_path, monkeypatch):
    """Magnitude pruning runs once per seed's teacher but reads no seed: --model.seed would be refused (it was, at
    the second seed of the shipped study, before the fix); the study's check now parses the last seed's commands."""
    from lmshrink.study.runner import build_command
    from lmshrink.study.validate import check_study

    monkeypatch.chdir(REPO)
    spec = yaml.safe_load(write_study(tmp_path, tiny_bert_dir).read_text())
    spec["stages"][0]["seeded"] = True
    spec["stages"].append({"name": "l1", "kind": "prune", "from": "teacher", "seeded": False,
                           "config": "configs/prune/kprune_stereoset.yaml", "args": ["--model.method=L1Heads"]})
    (tmp_path / "seeded.yaml").write_text(yaml.safe_dump(spec))
    study = load_spec(tmp_path / "seeded.yaml")
    check_study(study)
    stage = study.stage("l1")
    assert study.seeds_of(stage) == (0, 1)
    assert not any(arg.startswith("--model.seed") for arg in build_command(study, stage, 1)[1])
    assert "--model.seed=1" in build_command(study, study.stage("kprune"), 1)[1]


@pytest.mark.slow
def test_a_token_classification_study_reports_entity_f1_per_group_and_type(tiny_bert_dir, tmp_path, monkeypatch):
    """The NER study on a tiny random BERT: each result holds the evaluation's entity F1 (not accuracy), the
    report's table, per-group deltas and per-type table are in F1, and the plots are named by the metric; its
    latency is timed compiled."""
    monkeypatch.chdir(REPO)
    common = [f"--data.tokenizer_path={tiny_bert_dir}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
              "--trainer.logger.save_dir=.", "--trainer.enable_progress_bar=false"]
    spec = {"output_dir": str(tmp_path / "study"), "seeds": [0], "common_args": common, "stages": [
        {"name": "teacher", "kind": "teacher", "config": "configs/teacher/conll_minilm.yaml", "seeded": False,
         "args": [f"--model.model_path={tiny_bert_dir}", "--trainer.max_epochs=1", "--model.learning_rate=0.001"]},
        {"name": "kprune", "kind": "prune", "from": "teacher", "config": "configs/prune/kprune_conll.yaml",
         "args": ["--model.method.flops_keep_ratio=0.5"]}]}  # quantize stages: the StereoSet study test
    (tmp_path / "ner.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(runner, "run_python", run_python_here)
    assert study_main([str(tmp_path / "ner.yaml"), "--latency-rounds=1", "--latency-compiled"]) == 0
    report = tmp_path / "study" / "report"
    assert "every model compiled (torch.compile" in (report / "report.md").read_text()  # the StereoSet test: eager
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in results] == ["teacher", "kprune"]
    for result in results:
        run = tmp_path / "study" / result["stage"] / ("once" if result["seed"] is None else f"seed{result['seed']}")
        record = json.loads(next((run / "eval").rglob("group_metrics_test*.json")).read_text())
        assert result["metric"] == record["metric"] == "f1" and "avg_acc" not in result
        assert (result["f1"], result["worst_group_f1"]) == (record["f1"], record["worst_group_f1"])
        assert set(result["groups"]) == {"capitals", "normal"} and set(result["types"]) == {"LOC", "MISC", "ORG", "PER"}
    assert results[1]["gflops"] < results[0]["gflops"] and results[1]["params"] < results[0]["params"]
    rows = aggregate(results)
    for row, result in zip(rows[1:], results[1:]):
        for name, group in result["groups"].items():
            if group["f1"] is not None and results[0]["groups"][name]["f1"] is not None:
                assert row["delta"][name] == pytest.approx(group["f1"] - results[0]["groups"][name]["f1"])
    markdown = (report / "report.md").read_text()
    assert "| avg F1 | worst-group F1 |" in markdown and "ECE" not in markdown
    assert "## Per-group entity F1 delta to the teacher" in markdown and "approximate-randomization" in markdown
    assert "| kprune | teacher | 1 |" in markdown and f"{rows[1]['f1']:.4f}" in markdown
    assert "| PER (" in markdown.split("## Per-type F1")[1]
    assert {p.name for p in report.glob("*.png")} >= {"f1_vs_gflops.png", "f1_vs_size_mb.png", "worst_vs_avg.png"}


def test_a_report_mixing_accuracy_and_f1_results_is_refused():
    base = {"kind": "teacher", "from": None, "scheme": None, "eval_set": "same", "seed": None}
    results = [base | {"stage": "teacher", "groups": {"g": {"accuracy": 1.0}}, "avg_acc": 1.0, "worst_group_acc": 1.0},
               base | {"stage": "tagger", "metric": "f1", "groups": {"g": {"f1": 1.0}}, "f1": 1.0,
                       "worst_group_f1": 1.0}]
    with pytest.raises(ValueError, match=r"mix metrics \['accuracy', 'f1'\]"):
        aggregate(results)


def test_a_stage_or_seed_the_study_lacks_is_one_error_line(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    from lmshrink.study.__main__ import cli

    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_bert_dir)
    assert cli([str(config), "--stage", "kprune", "--seed", "7"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --stage kprune --seed 7: no such run in {config} (--list "
                                               f"prints every stage and seed)")
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("content, message", [
    ("generative", r"holds results of a generative study, but .*study.yaml is a classification study"),
    ("truncated", r"results.jsonl: line 2 \(1-based\) is not valid JSON"),
    ("array", r"results.jsonl: line 1 \(1-based\) is a JSON array, expected an object"),
], ids=["another-task", "truncated", "array"])
def test_report_only_of_the_wrong_results_is_one_line(content, message, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """Issue 28: results of another task's study said only ``error: groups``; a truncated file was a traceback."""
    from lmshrink.study.__main__ import cli

    monkeypatch.chdir(REPO)
    shipped = (REPO / "docs/results/study/results.jsonl").read_text().splitlines()
    results = tmp_path / "results.jsonl"
    results.write_text({"generative": (REPO / "docs/results/study_generative/results.jsonl").read_text(),
                        "truncated": shipped[0] + "\n" + shipped[1][: len(shipped[1]) // 2] + "\n",
                        "array": "[1, 2]\n"}[content])
    assert cli([str(write_study(tmp_path, tiny_bert_dir)), "--report-only", str(results)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and re.search(message, errors[0]), errors


def test_the_study_builds_and_evaluates_in_its_precision_and_quantize_stages_in_float32(tiny_bert_dir, tmp_path,
                                                                                        monkeypatch):
    """``precision`` reaches every build and evaluation of a float model as Lightning's own option; a quantize
    stage is evaluated in 32-true (its deltas are the scheme's alone); ``auto`` follows the machine."""
    from lmshrink.study import runner as study_runner

    monkeypatch.chdir(REPO)
    spec = yaml.safe_load(write_study(tmp_path, tiny_bert_dir, precision="auto").read_text())
    spec["stages"].append({"name": "int8", "kind": "quantize", "from": "kprune", "scheme": "dynamic-int8"})
    (tmp_path / "auto.yaml").write_text(yaml.safe_dump(spec))
    study = load_spec(tmp_path / "auto.yaml")
    monkeypatch.setattr(study_runner, "resolve_precision", lambda choice: {"auto": "bf16-mixed"}.get(choice, choice))
    for name in ("teacher", "kprune"):
        stage = study.stage(name)
        seed = study.seeds_of(stage)[0]
        assert "--trainer.precision=bf16-mixed" in study_runner.build_command(study, stage, seed)[1]
        assert "--trainer.precision=bf16-mixed" in study_runner.eval_command(study, stage, seed)
    assert "--trainer.precision=32-true" in study_runner.eval_command(study, study.stage("int8"), 0)
    spec["precision"] = "bf16"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"precision 'bf16' is not one of \['auto', '32-true', 'bf16-mixed'\]"):
        load_spec(tmp_path / "bad.yaml")


@pytest.mark.slow
def test_a_calibrated_scheme_is_a_study_stage_calibrated_with_the_study_seed(tiny_bert_dir, tmp_path, monkeypatch):
    """``static-int8-x86`` as a stage: its evaluation calibrates on the training split with the study's seed and
    times nothing, the latency step rebuilds the same model from the same sample, and its latency is timed compiled
    (as it runs), which the report says."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(runner, "run_python", run_python_here)
    spec = yaml.safe_load(write_study(tmp_path, tiny_bert_dir).read_text())
    spec["seeds"] = [1]  # not the Quantize callback's default 0: the study's seed must reach the calibration
    spec["stages"] = [spec["stages"][0], {"name": "static", "kind": "quantize", "from": "teacher",
                                          "scheme": "static-int8-x86"}]
    config = tmp_path / "static.yaml"
    config.write_text(yaml.safe_dump(spec))
    assert study_main([str(config), "--latency-rounds=1"]) == 0
    study = tmp_path / "study"
    result = json.loads((study / "static" / "seed1" / "result.json").read_text())
    record = json.loads(next((study / "static" / "seed1" / "eval").rglob("quantization_static-int8-x86_*.json"))
                        .read_text())
    assert result["calibration_seed"] == record["calibration"]["seed"] == 1
    assert result["run_precision"] == "32-true"
    # the evaluation times nothing (the report does, side by side): no compilation for the timing's batch sizes
    assert set(record["size_latency"]["quantized"]) == {"memory_mb", "disk_mb"}
    rows = [json.loads(line) for line in (study / "report" / "results.jsonl").read_text().splitlines()]
    assert [(row["stage"], row["latency_compiled"]) for row in rows] == [("teacher", False), ("static", True)]
    assert 0 < rows[1]["size_mb"] < rows[0]["size_mb"]  # the int8 graph's weights, not the float model's
    markdown = (study / "report" / "report.md").read_text()
    assert re.search(r"\| static \| teacher \| 1 \| .* \| [0-9.]+ \(compiled\) \|", markdown)


@pytest.mark.slow
def test_a_study_with_two_jobs_runs_every_run_and_reports(tiny_bert_dir, tmp_path, monkeypatch):
    """``--jobs 2``: the two K-prune seeds run at once after the teacher, in real processes with one thread each;
    every result is written and the report is the same kind of report."""
    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_bert_dir)
    assert study_main([str(config), "--jobs", "2", "--latency-rounds=1"]) == 0
    results = [json.loads(line) for line in (tmp_path / "study" / "report" / "results.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["seed"]) for r in results] == [("teacher", None), ("kprune", 0), ("kprune", 1)]
    assert all(r["latency_ms"] > 0 and r["size_mb"] > 0 for r in results)
    assert "Who pays (significant changes only)" in (tmp_path / "study" / "report" / "report.md").read_text()


def test_a_directory_given_as_the_study_config_is_named_as_one(tmp_path, capsys):
    from lmshrink.study.__main__ import cli

    assert cli([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (f"error: study config {tmp_path} is a directory; give "
                                                                f"the study's YAML file")


@pytest.mark.slow
def test_on_a_gpu_machine_cpu_only_schemes_are_checked_and_evaluated_on_the_cpu(monkeypatch):
    """The shipped study has dynamic-int8 and static-int8-x86 stages, whose kernels exist on the CPU only: on a GPU
    machine its check refused them (or the run would have failed in that stage). They are now evaluated on the CPU
    there, the other stages where the command line says."""
    from lmshrink.study import validate

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(validate, "_device", lambda: "cuda")  # what torch.cuda.is_available() picks on a GPU machine
    spec = load_spec(Path("configs/study/stereoset_minilm.yaml"))
    validate.check_study(spec)
    on_cpu = {stage.name: "--trainer.accelerator=cpu" in runner.eval_command(spec, stage, 0)
              for stage in spec.stages if stage.kind == "quantize"}
    assert on_cpu == {"dynamic-int8": True, "bnb-nf4": False, "static-int8": True,
                      "distill+kprune-0.5+int8": True}, on_cpu
    # a GPU user's --train-arg=--trainer.accelerator=gpu ... comes first; the CPU-only stage's own choice wins
    spec = replace(spec, common_args=(*spec.common_args, "--trainer.accelerator=gpu", "--trainer.devices=8"))
    command = runner.eval_command(spec, next(s for s in spec.stages if s.name == "static-int8"), 0)
    last = {arg.split("=")[0]: arg for arg in command if arg.startswith(("--trainer.accelerator", "--trainer.devices"))}
    assert last == {"--trainer.accelerator": "--trainer.accelerator=cpu", "--trainer.devices": "--trainer.devices=1"}
