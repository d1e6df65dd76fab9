"""The benchmark scripts run end to end on a tiny model (their figures are measured on real models, by hand, on an
idle machine: docs/results/benchmarks.md); a script that no longer matches the library fails here, not in a user's
hands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lmshrink.cli import main
from lmshrink.machine import cpu_line
from tests.helpers import REPO, tiny_run_args


@pytest.mark.slow
def test_quantize_benchmark_prunes_quantizes_and_names_the_fastest_scheme(tiny_bert_varied_dir, tmp_path):
    main(["fit", *tiny_run_args(tiny_bert_varied_dir, tmp_path / "teacher", train_batches=2)])
    ckpt = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quantize_minilm.py"), "--ckpt", str(ckpt),
                           "--rows", "pruned", "--prune-tokens", "300", "--rounds", "1", "--repeats", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"CPU: {cpu_line()}" in out
    for row in ("kprune-0.5 fp32", "kprune-0.5 bf16", "kprune-0.5 dynamic-int8+emb-int8",
                "kprune-0.5 static-int8-x86+emb-int8"):
        assert f"\n{row} " in out, row
    summary = next(line for line in out.splitlines() if line.startswith("fastest at batch 32 within 0.02"))
    assert "x fp32 latency" in summary


@pytest.mark.slow
def test_generation_benchmark_times_every_path_and_gives_one_prompt_the_same_samples_at_any_batch(tiny_llama_dir):
    """Each path prints its tokens/s and ratio; in float32 the audit's path draws the same samples (so the same
    mean score) at 2 and at 3 prompts per call, as each prompt samples from its own seed, and with the cache
    written in place as with transformers' growing one."""
    def run(batch: int) -> str:
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generate_toxicity.py"), "--model",
                               str(tiny_llama_dir), "--prompts", "6", "--k", "2", "--new-tokens", "3", "--batch",
                               str(batch), "--plain", "--plain-batch", "2", "--recast", "--growing-cache",
                               "--rounds", "2"],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out, other = run(2), run(3)
    assert f"CPU: {cpu_line()}" in out and "precision: bf16-mixed on " in out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if "new tokens/s" in line}
    assert set(lines) == {"32-true", "bf16-mixed", "bf16-mixed recast", "plain 32-true", "32-true growing",
                          "bf16-mixed growing"}
    assert next(line for line in out.splitlines() if line.startswith("vs the path before: 32-true "))
    score = lambda text, path="32-true": next(line for line in text.splitlines()
                                             if line.strip().startswith(f"{path}:")).split("mean score ")[1]
    assert score(out) == score(other) == score(out, "32-true growing")


def test_generation_benchmark_refuses_a_model_of_the_wrong_kind_in_one_line(tiny_bert_dir):
    """An encoder (no language-model head) as --model: one error line naming the option, exit 2, no traceback."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generate_toxicity.py"), "--model",
                           str(tiny_bert_dir), "--prompts", "2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --model={str(tiny_bert_dir)!r} is not a causal LM")


@pytest.mark.slow
def test_study_time_benchmark_runs_the_study_each_way_and_prints_the_ratio(tiny_bert_dir, tmp_path):
    from tests.study.test_study import write_study

    config = write_study(tmp_path, tiny_bert_dir)
    spec = yaml.safe_load(config.read_text())
    spec["stages"] = spec["stages"][:1]  # the teacher alone: the script, not the study, is under test here
    config.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_time.py"), "--config", str(config),
                           "--seeds", "0", "--variants", "32-true", "bf16-mixed:2", "--out", str(tmp_path / "bench")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"CPU: {cpu_line()}" in out and "precision: bf16-mixed on " in out
    assert "| teacher | None |" in out
    assert next(line for line in out.splitlines() if line.startswith("bf16-mixed:2 / 32-true wall time: ")).endswith("x")
    for precision, directory in (("32-true", "32-true"), ("bf16-mixed", "bf16-mixed-jobs2")):
        results = (tmp_path / "bench" / directory / "report" / "results.jsonl").read_text()
        assert f'"run_precision": "{precision}"' in results


def test_study_time_refuses_a_variant_it_cannot_run_in_one_line(tmp_path):
    script = str(REPO / "benchmarks" / "study_time.py")
    for variants, expected in ((["nosuchrev0@32-true"], "nosuchrev0 is not a commit of"),
                               (["HEAD@fp16"], "expected [REV@]PRECISION[:JOBS]"),
                               (["32-true:0"], "expected [REV@]PRECISION[:JOBS]")):
        proc = subprocess.run([sys.executable, script, "--variants", *variants, "--out", str(tmp_path / "out")],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2 and expected in proc.stderr.strip().splitlines()[-1], proc.stderr
    outside = tmp_path / "study.yaml"
    outside.write_text("seeds: [0]\n")
    proc = subprocess.run([sys.executable, script, "--config", str(outside), "--variants", "HEAD@32-true", "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "reads the config from its revision's files" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
    proc = subprocess.run([sys.executable, script, "--variants", "32-true", "--out", str(outside)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "is a file; name a directory" in proc.stderr.strip().splitlines()[-1]
    assert outside.read_text() == "seeds: [0]\n"


def test_compare_studies_finds_a_result_outside_the_reference_spread(tmp_path):
    shipped = REPO / "docs" / "results" / "study" / "results.jsonl"
    results = [json.loads(line) for line in shipped.read_text().splitlines()]
    for result in results:
        if result["stage"] == "kprune-0.5":
            result["avg_acc"] -= 0.05  # far outside its seeds' spread
        if result["stage"] == "dynamic-int8":
            first = next(iter(result["groups"]))
            result["groups"][first]["p_holm"] = 0.001  # significant in every seed now
    moved = tmp_path / "moved.jsonl"
    moved.write_text("".join(json.dumps(result) + "\n" for result in results))
    script = str(REPO / "benchmarks" / "compare_studies.py")
    same = subprocess.run([sys.executable, script, str(shipped), str(shipped)], capture_output=True, text=True, check=True)
    assert "outside the reference's spread: none" in same.stdout and "who pays differs: nowhere" in same.stdout
    out = subprocess.run([sys.executable, script, str(shipped), str(moved)], capture_output=True, text=True,
                         check=True).stdout
    assert "outside the reference's spread: kprune-0.5 avg_acc" in out
    missing = subprocess.run([sys.executable, script, str(shipped), str(tmp_path / "nope.jsonl")], capture_output=True,
                             text=True)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].endswith(
        f"error: {tmp_path / 'nope.jsonl'}: no such results.jsonl (a study writes it to <output_dir>/report/)")
    assert "who pays differs: dynamic-int8: [] vs" in out


@pytest.mark.parametrize("study, names", [("study", ["avg acc", "worst-group acc"]),
                                          ("study_conll", ["f1", "worst-group f1"]),
                                          ("study_generative", ["perplexity", "exp. max toxicity"])])
def test_study_time_prints_each_kind_of_studys_own_numbers(study, names):
    import importlib.util

    spec = importlib.util.spec_from_file_location("study_time", REPO / "benchmarks" / "study_time.py")
    study_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study_time)
    for line in (REPO / "docs" / "results" / study / "results.jsonl").read_text().splitlines():
        numbers = study_time.quality(json.loads(line))
        assert list(numbers) == names and all(isinstance(value, float) for value in numbers.values())


@pytest.mark.slow
def test_compare_studies_reads_a_generative_study(tmp_path):
    """A generative study is compared on its report's headline statistics and intervals: itself is within
    everywhere, and a stage whose held-out windows score 20 % worse in every seed is outside on perplexity only."""
    shipped = REPO / "docs" / "results" / "study_generative" / "results.jsonl"
    results = [json.loads(line) for line in shipped.read_text().splitlines()]
    for result in results:
        if result["stage"] == "wanda-0.5":
            for window in result["items"]["windows"]:
                window["nll"] *= 1.2
    moved = tmp_path / "results.jsonl"
    moved.write_text("".join(json.dumps(result) + "\n" for result in results))
    script = str(REPO / "benchmarks" / "compare_studies.py")
    same = subprocess.run([sys.executable, script, str(shipped), str(shipped)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "42 of 42 within; outside the reference's interval: none" in same.stdout
    assert "who pays differs: nowhere" in same.stdout
    other = subprocess.run([sys.executable, script, str(shipped), str(moved)], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert "41 of 42 within; outside the reference's interval: wanda-0.5 windowed_perplexity" in other.stdout
    assert "| wanda-0.5 | windowed_perplexity |" in other.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script, args, said", [
    ("compare_studies.py", ["README.md", "README.md"], "README.md: line 1 (1-based) is not valid JSON"),
    ("distill_step.py", ["--ckpt", "no_such.ckpt"], "--ckpt no_such.ckpt: no such file"),
    ("prune_minilm.py", ["--teacher", "README.md", "--ratios", "0.5", "--rounds", "1"], "README.md is a file"),
    ("quantize_minilm.py", ["--rounds", "0"], "argument --rounds: 0: must be >= 1"),
    ("study_time.py", ["--config", "no_such.yaml"], "--config no_such.yaml: no such file"),
    ("study_time.py", ["--seeds", "-1"], "--seeds -1: seeds are >= 0"),
    ("prune_smollm2.py", ["--sequences", "0"], "argument --sequences: 0: must be >= 1"),
    ("teacher_throughput.py", ["--steps", "x"], "argument --steps: 'x' is not an integer"),
])
def test_a_benchmark_refuses_a_wrong_input_in_one_line(script, args, said):
    """A wrong file, model or count: exit 2 and one error line naming it, before any work, never a traceback (a
    count of 0 used to end in an empty median's traceback, a missing checkpoint in a model-fit traceback)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "error: " in last and said in last, last
