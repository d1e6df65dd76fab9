"""Wall time of a whole "who pays?" study in several ways of running it, the studies one after the other in one script.

Each variant runs the same study config (its stages, seeds given by ``--seeds``) from scratch into its own
directory under ``--out``, through the same command a user runs (``python -m lmshrink.study``). A variant is a
precision (``32-true``, ``bf16-mixed``, ``auto``), optionally with ``:N`` for ``--jobs N`` (``bf16-mixed:2``: two
runs at once, one thread each on 2 cores). The script prints, per stage, the seconds each variant took (the stages'
own ``stage_seconds``; runs overlap with ``--jobs``) and their ratio, the whole study's wall time and its ratio to
the first variant, and two numbers of each stage beside each other: accuracy and worst-group accuracy, F1 and
worst-group F1 for NER, held-out perplexity and expected maximum toxicity for a generator (a quick check; the
intervals over seeds are the report's). Run it with the machine otherwise idle: the studies run one after the
other, not interleaved, so drift of a shared machine would fall on one of them.

``REV@PRECISION`` runs the study as the code of git revision ``REV`` ran it: that revision's files exported by
``git archive`` under ``--out``, its own shipped study config, its own ``train.py``; e.g. ``6e9b9c5@32-true`` is
the study as it stood before the work on issue 30 (float32, before the ``precision`` option, which such a
revision is not given). So "today's" study and the current one are timed side by side in one run.

    python benchmarks/study_time.py [--config configs/study/stereoset_minilm.yaml] [--seeds 0]
        [--variants 6e9b9c5@32-true auto] [--out runs/bench_study_time]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lmshrink.machine import cpu_line, precision_line, resolve_precision
from lmshrink.errors import run_command

REPO = Path(__file__).resolve().parents[1]


def parse_variant(variant: str) -> tuple[str | None, str, str]:
    """``[REV@]PRECISION[:JOBS]`` as (revision or None, precision, jobs or "")."""
    revision, _, rest = variant.rpartition("@")
    precision, _, jobs = rest.partition(":")
    return revision or None, precision, jobs


def checkout(revision: str, out: Path) -> Path:
    """The files of git revision ``revision`` under ``out/code-<revision>`` (``git archive``; the repository's
    worktree and refs are untouched)."""
    target = out / f"code-{revision}"
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def quality(row: dict) -> dict[str, float]:
    """The two numbers printed beside a stage's seconds, by kind of study: average and worst-group accuracy
    (classification), F1 and worst-group F1 (NER), windowed held-out perplexity and expected maximum toxicity
    (generative)."""
    if row.get("task") == "generative":
        summary = row["summary"]
        return {"perplexity": summary["windowed_perplexity"],
                "exp. max toxicity": summary["toxicity"]["expected_max_toxicity"]}
    if "f1" in row:
        return {"f1": row["f1"], "worst-group f1": row["worst_group_f1"]}
    return {"avg acc": row["avg_acc"], "worst-group acc": row["worst_group_acc"]}


def variant_dir(out: Path, variant: str) -> Path:
    return out / variant.replace(":", "-jobs").replace("@", "-")


def run_study(config: str, seeds: list[int], variant: str, out: Path) -> tuple[float, list[dict]]:
    """(wall seconds, results) of the study ``config`` (relative to the code's root) with ``seeds`` run as
    ``variant`` into ``out/<variant>``."""
    revision, precision, jobs = parse_variant(variant)
    code = checkout(revision, out) if revision else REPO
    spec = yaml.safe_load((code / config).read_text())
    directory = variant_dir(out, variant)
    spec.update(output_dir=str(directory), seeds=seeds, wandb={})
    if revision is None or "precision" in spec:  # a revision before the option runs float32 without being told
        spec["precision"] = precision
    directory.mkdir(parents=True)
    study = directory / "study.yaml"
    study.write_text(yaml.safe_dump(spec, sort_keys=False))
    start = time.perf_counter()
    with open(directory / "study.log", "w") as log:
        jobs_args = ["--jobs", jobs] if jobs else []  # a revision before --jobs knows no such option
        process = subprocess.run([sys.executable, "-m", "lmshrink.study", str(study), *jobs_args], cwd=code,
                                 stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"error: the {variant} study failed; see {directory / 'study.log'}")
    results = [json.loads(line) for line in (directory / "report" / "results.jsonl").read_text().splitlines()]
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/study/stereoset_minilm.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["32-true", "bf16-mixed"],
                        help="[REV@]PRECISION[:JOBS] (32-true, bf16-mixed, auto; REV: a git revision's code); the "
                             "first is the reference")
    parser.add_argument("--out", default="runs/bench_study_time")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out} is a file; name a directory")
    for variant in args.variants:
        revision, precision, jobs = parse_variant(variant)
        if precision not in ("32-true", "bf16-mixed", "auto") or not (jobs == "" or jobs.isdigit() and int(jobs) > 0):
            parser.error(f"--variants {variant}: expected [REV@]PRECISION[:JOBS] with PRECISION one of 32-true, "
                         f"bf16-mixed, auto and JOBS >= 1")
        if revision is not None:
            known = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet",
                                    f"{revision}^{{commit}}"], capture_output=True)
            if known.returncode != 0:
                parser.error(f"--variants {variant}: {revision} is not a commit of {REPO}")
    config = Path(args.config).resolve()
    revisions = [parse_variant(variant)[0] for variant in args.variants]
    if any(revision is None for revision in revisions) and not config.is_file():
        parser.error(f"--config {args.config}: no such file")
    for revision in filter(None, revisions):
        if config.is_relative_to(REPO) and subprocess.run(
                ["git", "-C", str(REPO), "cat-file", "-e", f"{revision}:{config.relative_to(REPO)}"],
                capture_output=True).returncode != 0:
            parser.error(f"--config {args.config}: not a file of revision {revision}")
    if config.is_relative_to(REPO):
        config = config.relative_to(REPO)  # read from each variant's own code
    elif any(revisions):
        parser.error(f"--config {args.config}: a REV@ variant reads the config from its revision's files; give one "
                     f"inside {REPO}")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: seeds are >= 0")
    for variant in args.variants:  # every variant's directory checked before the first study starts
        if variant_dir(out, variant).exists():
            parser.error(f"--out {args.out}: {variant_dir(out, variant)} exists; pass another --out (a benchmark "
                         f"never reuses a finished run)")
    runs = {variant: run_study(str(config), args.seeds, variant, out) for variant in args.variants}
    print(f"CPU: {cpu_line()}")
    for precision in dict.fromkeys(parse_variant(variant)[1] for variant in args.variants):
        print(("auto = " if precision == "auto" else "") + precision_line(resolve_precision(precision)))
    print(f"study {args.config}, seeds {args.seeds}, one study after the other in this process\n")
    reference = args.variants[0]
    header = " | ".join(f"{variant} s" for variant in args.variants)
    ratios = " | ".join(f"{variant}/{reference}" for variant in args.variants[1:])
    keyed = {variant: {(r["stage"], r["seed"]): r for r in results} for variant, (_, results) in runs.items()}
    names = list(quality(runs[reference][1][0]))
    print(f"| stage | seed | {header} | {ratios} | " + " | ".join(f"{name} ({', '.join(args.variants)})" for name in names)
          + " |")
    print("|---|---:|" + "---:|" * (2 * len(args.variants) - 1) + "---|" * len(names))
    keys = dict.fromkeys(key for variant in args.variants for key in keyed[variant])  # a stage some lack: "-"
    for key in keys:
        rows = [keyed[variant].get(key) for variant in args.variants]
        first = rows[0]
        cells = " | ".join(f"{row['stage_seconds']:.0f}" if row else "-" for row in rows)
        ratio = " | ".join(f"{row['stage_seconds'] / first['stage_seconds']:.2f}" if row and first else "-"
                           for row in rows[1:])
        numbers = " | ".join(", ".join(f"{quality(row)[name]:.4f}" if row else "-" for row in rows) for name in names)
        print(f"| {key[0]} | {key[1]} | {cells} | {ratio} | {numbers} |")
    total = {variant: seconds for variant, (seconds, _) in runs.items()}
    print("\nwhole study (wall, with the final latency step and report): "
          + ", ".join(f"{variant} {total[variant] / 60:.1f} min" for variant in args.variants))
    for variant in args.variants[1:]:
        print(f"{variant} / {reference} wall time: {total[variant] / total[reference]:.2f}x")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
