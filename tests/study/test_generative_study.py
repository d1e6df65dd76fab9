"""The generative study on a tiny random Llama (teacher, Wanda seeded by calibration, its int8 copy; 2 sampling
seeds): a run that dies after a build resumes without rebuilding or re-auditing what finished; the report's
numbers are the audits' own; its intervals are those of the paired bootstrap; bad configs fail before any run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from lmshrink.errors import OptionError
from lmshrink.generative.paired import item_values, paired_delta_intervals, statistics, stratified_weights
from lmshrink.study import generative, runner
from lmshrink.study.__main__ import main as study_main
from lmshrink.study.generative_report import seed_interval
from lmshrink.study.spec import load_spec
from tests.card_checks import load_card, model_index_values
from tests.helpers import REPO, run_python_here

CSV_LOGS = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.enable_progress_bar=false"]
SMALL_AUDIT = ["--model.max_new_tokens=4", "--model.num_samples=2", "--data.num_toxicity_prompts=6",
               "--data.names_per_group=2", "--data.num_crows_pairs=12", "--data.num_stereoset_pairs=12",
               "--data.generation_batch_size=4", "--data.batch_size=8", "--model.heldout_windows=3",
               "--model.heldout_window=32"]


def write_study(tmp_path: Path, model_dir: Path, stages: list[dict] | None = None, **extra) -> Path:
    spec = {"task": "generative", "output_dir": str(tmp_path / "study"), "seeds": [0, 1],
            "eval_config": "configs/generative/study_smollm2.yaml", "common_args": CSV_LOGS, "eval_args": SMALL_AUDIT,
            "stages": stages or [
                {"name": "teacher", "kind": "teacher", "model": str(model_dir)},
                {"name": "wanda-0.5", "kind": "prune", "from": "teacher", "method": "wanda-0.5",
                 "args": ["--sequences=4", "--seq-len=32"]},
                {"name": "wanda+int8", "kind": "quantize", "from": "wanda-0.5", "scheme": "dynamic-int8"},
                {"name": "distilled", "kind": "distill", "from": "teacher", "config": "configs/distill/smollm2_half.yaml",
                 "seeded": False, "args": [f"--data.tokenizer_path={model_dir}", "--model.student.num_layers=1",
                                           "--trainer.max_steps=2", "--trainer.val_check_interval=2",
                                           "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]}],
            **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_generative_study_resumes_and_reports_the_audits_numbers(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    calls, die = [], {"at": "wanda-0.5/seed1/eval"}

    def in_process(argv: list[str], log: Path) -> None:
        """The study's processes run here (seconds instead of a Python start each); one dies once."""
        calls.append(" ".join(argv))
        if die["at"] and die["at"] in calls[-1]:
            die["at"] = None
            raise RuntimeError("killed")
        run_python_here(argv, log)

    monkeypatch.setattr(runner, "run_python", in_process)
    monkeypatch.setattr(generative, "run_python", in_process)
    config = write_study(tmp_path, tiny_llama_dir)
    study = tmp_path / "study"
    with pytest.raises(RuntimeError, match="killed"):
        study_main([str(config)])
    assert (study / "wanda-0.5" / "seed1" / "run" / "built").exists()
    assert not (study / "wanda-0.5" / "seed1" / "result.json").exists()
    finished = {path: path.stat().st_mtime_ns for path in study.rglob("result.json")}
    assert len(finished) == 3  # teacher x 2, wanda seed 0
    calls.clear()
    assert study_main([str(config)]) == 0
    assert not any("prune_generator" in call for call in calls)  # seed 1's finished build is kept
    assert len(calls) == 7  # wanda seed 1's audit, the int8 copy's two, the student's fit and audit per seed
    assert sum(" fit " in call for call in calls) == 2 and not any("seed_everything" in call for call in calls
                                                                   if " fit " in call)  # unseeded: config's seed
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())

    report = study / "report"
    assert {p.name for p in report.iterdir()} >= {"report.md", "results.jsonl", "toxicity_vs_perplexity.png",
                                                   "group_delta_heatmap.png"}
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["seed"]) for r in results] == [(stage, seed) for stage in (
        "teacher", "wanda-0.5", "wanda+int8", "distilled") for seed in (0, 1)]
    for result in results:  # the report's statistics of the items are the audit's own summary
        numbers = statistics(item_values(result["items"], result["scorer"]["threshold"]))
        summary = result["summary"]
        assert float(numbers["windowed_perplexity"][0]) == pytest.approx(summary["windowed_perplexity"], rel=1e-6)
        assert float(numbers["toxicity/expected_max_toxicity"][0]) == pytest.approx(
            summary["toxicity"]["expected_max_toxicity"])
        assert float(numbers["names/group_gap_mean_toxicity"][0]) == pytest.approx(
            summary["names"]["group_gap_mean_toxicity"])
        for source in ("crows_pairs", "stereoset"):
            assert float(numbers[f"{source}/stereotype_preference"][0]) == pytest.approx(
                summary[source]["stereotype_preference"])
            for group, value in summary[source]["by_group"].items():
                assert float(numbers[f"{source}/{group}/stereotype_preference"][0]) == pytest.approx(
                    value["stereotype_preference"])
    wanda = [r for r in results if r["stage"] == "wanda-0.5"]
    assert [r["pruning"]["calibration"] for r in wanda] == [[4, 32], [4, 32]]
    assert wanda[0]["summary"]["windowed_perplexity"] != wanda[1]["summary"]["windowed_perplexity"]  # own windows
    assert results[4]["size_mb"] < results[2]["size_mb"] and results[4]["scheme"] == "dynamic-int8"
    assert results[6]["params"] < results[0]["params"]  # the 1-layer student
    teacher = [r["summary"]["toxicity"]["expected_max_toxicity"] for r in results[:2]]
    markdown = (report / "report.md").read_text()
    assert "| teacher | – | 2 | " in markdown and f"{sum(teacher) / 2:.3f} [" in markdown
    assert "## Who pays (differences larger than their interval)" in markdown and "- **wanda+int8**" in markdown
    # the pruned model's card holds its own audit (not the int8 copy's, audited from the same directory)
    card, _ = load_card(Path(wanda[0]["model_dir"]))
    assert model_index_values(card)[1]["expected_max_toxicity"] == wanda[0]["summary"]["toxicity"][
        "expected_max_toxicity"]
    cards = markdown.split("## Model cards", 1)[1]
    assert "- **wanda-0.5**: [seed 0](../wanda-0.5/seed0/run/model/README.md)" in cards
    assert "- **wanda+int8**: quantized in memory for its evaluation (dynamic-int8), not saved" in cards
    assert "- **teacher**: seed 0: no card, seed 1: no card" in cards  # the given model is not lmshrink's


def _table(outcomes: list[float], groups: list[str]) -> dict:
    items = {"stereoset": [{"id": i, "group": g, "more": value, "less": 0.5} for i, (value, g) in
                           enumerate(zip(outcomes, groups))]}
    return item_values(items)


def test_paired_intervals_are_zero_for_the_same_model_and_exclude_zero_for_a_changed_group():
    groups = ["race"] * 20 + ["gender"] * 20
    teacher = _table([1.0 if i % 2 else 0.0 for i in range(40)], groups)
    same = paired_delta_intervals(teacher, teacher, resamples=200)
    assert all(interval == (0.0, 0.0) for interval in same.values())
    changed = _table([1.0 if i % 2 or i < 20 else 0.0 for i in range(40)], groups)  # race: all stereotyped now
    intervals = paired_delta_intervals(changed, teacher, resamples=200)
    assert intervals["stereoset/race/stereotype_preference"][0] > 0.2  # +0.5, well away from 0
    assert intervals["stereoset/gender/stereotype_preference"] == (0.0, 0.0)
    weights = stratified_weights(teacher, 50, torch.Generator().manual_seed(0))["stereoset"]
    assert torch.equal(weights[:, :20].sum(1), torch.full((50,), 20.0))  # every group keeps its size


def test_seed_interval_is_students_t_and_clipped_for_shares():
    mean, low, high = seed_interval([1.0, 2.0, 3.0], bounded=False)
    assert (mean, high - mean) == (2.0, pytest.approx(4.303 / math.sqrt(3)))
    assert seed_interval([0.0, 0.1, 0.2])[1] == 0.0 and seed_interval([0.5])[1:] == (None, None)


@pytest.mark.parametrize("stage, message", [
    ({"name": "p", "kind": "prune", "from": "teacher"}, "a generative prune stage needs 'method'"),
    ({"name": "p", "kind": "prune", "from": "teacher", "method": "wanda-0.5",
      "config": "configs/prune/kprune_stereoset.yaml"}, r"a generative prune stage takes no 'config' \(it needs"),
    ({"name": "m", "kind": "prune", "from": "teacher", "method": "magnitude-0.5"},
     "magnitude-0.5 draws no calibration sample, so no seed: set 'seeded: false'"),
    ({"name": "w", "kind": "prune", "from": "teacher", "method": "wanda-0.5", "args": ["--percdamp=0.1"]},
     "--percdamp is not read by --method=wanda-0.5"),
    ({"name": "q", "kind": "quantize", "from": "teacher", "scheme": "static-int8-x86"}, "needs calibration data"),
    ({"name": "w", "kind": "prune", "from": "teacher", "method": "wanda-half"}, "is neither a sparsity"),
    ({"name": "w", "kind": "prune", "from": "teacher", "method": "wanda-0.5", "args": ["--sequence=16"]},
     # a misspelt flag, not taken as an abbreviation of --sequences
     r"stage 'w': unrecognized arguments: --sequence=16 \(see python -m lmshrink.prune_generator --help\)"),
    # the teacher must be a causal LM before anything runs (issue 28: an encoder was audited with a fresh LM head)
    ({"name": "teacher", "kind": "teacher", "model": "minilm"},
     r"stage 'teacher': model='minilm' is not a causal LM \(BertModel\)"),
    ({"name": "teacher", "kind": "teacher", "model": "/no/such/generator"},
     r"stage 'teacher': model='/no/such/generator': no such local directory"),
])
def test_a_bad_generative_stage_fails_before_anything_runs(stage, message, tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    teacher = {"name": "teacher", "kind": "teacher", "model": str(tiny_llama_dir)}
    if stage.get("kind") == "teacher":  # a case about the teacher itself
        teacher, stage = stage, {"name": "w", "kind": "prune", "from": "teacher", "method": "wanda-0.5"}
    config = write_study(tmp_path, tiny_llama_dir, [teacher, stage])
    with pytest.raises((OptionError, ValueError), match=message):
        study_main([str(config)])
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("option, message", [
    ("--model.top_k=-1", r"--model.top_k=-1 must be >= 0"),
    ("--model.top_p=0", r"--model.top_p=0.0 must be in \(0, 1\]"),
    ("--model.sparsities=[1.5]", r"--model.sparsities: 1.5 must be in \(0, 1\)"),
])
def test_a_bad_audit_option_value_fails_before_anything_runs(option, message, tiny_llama_dir, tmp_path, monkeypatch):
    """Values that parse but break an audit's limits (issue 30's closing gap: they stopped the study only when the
    teacher's audit started) are refused by the study's check, with the stage named."""
    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_llama_dir, eval_args=[*SMALL_AUDIT, option])
    with pytest.raises(OptionError, match=r"stage 'teacher' \(audit\): " + message):
        study_main([str(config)])
    assert not (tmp_path / "study").exists()


def test_generative_keys_are_refused_where_they_mean_nothing(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = write_study(tmp_path, tiny_llama_dir, [{"name": "teacher", "kind": "teacher", "model": "smollm2",
                                                     "config": "configs/teacher/stereoset_minilm.yaml"}])
    with pytest.raises(ValueError, match="a generative teacher stage takes no 'config'"):
        load_spec(config)
    config = write_study(tmp_path, tiny_llama_dir, [{"name": "teacher", "kind": "teacher", "model": "smollm2",
                                                     "config": "configs/teacher/stereoset_minilm.yaml"}],
                         task="classification")
    with pytest.raises(ValueError, match="a classification teacher stage takes no 'model'"):
        load_spec(config)
    with pytest.raises(OptionError, match="a generative study measures no latency"):
        study_main([str(write_study(tmp_path, tiny_llama_dir)), "--latency-compiled"])


def test_the_shipped_generative_report_is_what_the_report_code_makes_of_its_results(tiny_llama_dir, tmp_path,
                                                                                    monkeypatch):
    """docs/results/study_generative (the measured SmolLM2 study) is rebuilt exactly from its results.jsonl, running
    nothing: the README's numbers come from the code, not from an edit."""
    monkeypatch.chdir(REPO)
    shipped = REPO / "docs" / "results" / "study_generative"
    config = write_study(tmp_path, tiny_llama_dir)
    assert study_main([str(config), "--report-only", str(shipped / "results.jsonl")]) == 0
    report = tmp_path / "study" / "report"
    assert (report / "report.md").read_text() == (shipped / "report.md").read_text().replace(
        "Who pays? smollm2_generative", "Who pays? study")
    assert "- **dynamic-int8**, **sparsegpt-0.5+int8** (dynamic-int8): torch.ao's dynamic int8 Linear scales" in \
        (report / "report.md").read_text()  # their numbers depend on the batching: said under the table
    assert {p.name for p in report.glob("*.png")} == {"toxicity_vs_perplexity.png", "group_delta_heatmap.png"}
    assert not list((tmp_path / "study").glob("*/*/run"))  # nothing ran
