"""Wall time of a whole "who pays?" study at each precision, the study runs one after the other in one script.

Each precision runs the same study config (its stages, seeds given by ``--seeds``) from scratch into its own
directory under ``--out``, through the same command a user runs (``python -m lmshrink.study``), and the script
prints, per stage, the seconds each precision took (the stages' own ``stage_seconds``) and their ratio, the
whole study's wall time and its ratio, and the stages' accuracy and worst-group accuracy beside each other (a
quick check; the intervals over seeds are the report's). Run it with the machine otherwise idle: the studies
run one after the other, not interleaved, so drift of a shared machine would fall on one of them.

    python benchmarks/study_time.py [--config configs/study/stereoset_minilm.yaml] [--seeds 0]
        [--precision 32-true bf16-mixed] [--out runs/bench_study_time]
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

from lmshrink.machine import cpu_line, precision_line

REPO = Path(__file__).resolve().parents[1]


def run_study(config: Path, seeds: list[int], precision: str, out: Path) -> tuple[float, list[dict]]:
    """(wall seconds, results) of the study ``config`` with ``seeds`` and ``precision`` into ``out/<precision>``."""
    spec = yaml.safe_load(config.read_text())
    directory = out / precision
    if directory.exists():
        raise SystemExit(f"error: {directory} exists; pass another --out (a benchmark never reuses a finished run)")
    spec.update(output_dir=str(directory), seeds=seeds, precision=precision, wandb={})
    directory.mkdir(parents=True)
    study = directory / "study.yaml"
    study.write_text(yaml.safe_dump(spec, sort_keys=False))
    start = time.perf_counter()
    with open(directory / "study.log", "w") as log:
        process = subprocess.run([sys.executable, "-m", "lmshrink.study", str(study)], cwd=REPO, stdout=log,
                                 stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"error: the {precision} study failed; see {directory / 'study.log'}")
    results = [json.loads(line) for line in (directory / "report" / "results.jsonl").read_text().splitlines()]
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/study/stereoset_minilm.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--precision", nargs="+", choices=["32-true", "bf16-mixed", "auto"],
                        default=["32-true", "bf16-mixed"], help="the first is the reference of the ratios")
    parser.add_argument("--out", default="runs/bench_study_time")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    runs = {precision: run_study(Path(args.config).resolve(), args.seeds, precision, out)
            for precision in args.precision}
    print(f"CPU: {cpu_line()}")
    for precision in args.precision:
        print(precision_line(precision))
    print(f"study {args.config}, seeds {args.seeds}, one study after the other in this process\n")
    reference = args.precision[0]
    header = " | ".join(f"{precision} s" for precision in args.precision)
    ratios = " | ".join(f"{precision}/{reference}" for precision in args.precision[1:])
    print(f"| stage | seed | {header} | {ratios} | avg acc ({', '.join(args.precision)}) | worst-group acc |")
    print("|---|---:|" + "---:|" * (2 * len(args.precision) - 1) + "---|---|")
    keyed = {precision: {(r["stage"], r["seed"]): r for r in results} for precision, (_, results) in runs.items()}
    for key, first in keyed[reference].items():
        rows = [keyed[precision][key] for precision in args.precision]
        cells = " | ".join(f"{row['stage_seconds']:.0f}" for row in rows)
        ratio = " | ".join(f"{row['stage_seconds'] / first['stage_seconds']:.2f}" for row in rows[1:])
        accuracy = ", ".join(f"{row['avg_acc']:.4f}" for row in rows)
        worst = ", ".join(f"{row['worst_group_acc']:.4f}" for row in rows)
        print(f"| {key[0]} | {key[1]} | {cells} | {ratio} | {accuracy} | {worst} |")
    total = {precision: seconds for precision, (seconds, _) in runs.items()}
    print("\nwhole study (wall, with the final latency step and report): "
          + ", ".join(f"{precision} {total[precision] / 60:.1f} min" for precision in args.precision))
    for precision in args.precision[1:]:
        print(f"{precision} / {reference} wall time: {total[precision] / total[reference]:.2f}x")


if __name__ == "__main__":
    main()
