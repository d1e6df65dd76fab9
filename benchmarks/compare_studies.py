"""Whether a study run another way (bf16-mixed, another machine) stays within the seed intervals of a reference run.

Reads two ``results.jsonl`` of the same study (e.g. the shipped float32 ``docs/results/study/results.jsonl`` and a
bf16-mixed run's) and, for every stage both hold, prints the mean ± std over seeds of average accuracy, worst-group
accuracy and ECE, and whether the candidate's mean lies within the reference's mean ± ``--width`` standard
deviations over seeds (default 2: about the 95 % spread of one seed's result); then both "who pays" lists (group
changes significant in every seed, as the report marks them) and whether they are the same.

    python benchmarks/compare_studies.py REFERENCE.jsonl CANDIDATE.jsonl [--width 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("avg_acc", "worst_group_acc", "ece")


def by_stage(path: Path) -> dict[str, list[dict]]:
    stages: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        result = json.loads(line)
        stages.setdefault(result["stage"], []).append(result)
    return stages


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def who_pays(runs: list[dict]) -> set[str]:
    """Groups whose change to the teacher is significant (Holm p < 0.05) in every seed."""
    groups = [{name for name, group in run["groups"].items() if (group.get("p_holm") or 1.0) < 0.05} for run in runs]
    return set.intersection(*groups) if groups else set()


def precisions(stages: dict[str, list[dict]]) -> str:
    """The precisions the results were built and evaluated in (results written before lmshrink recorded it: none)."""
    used = {run.get("run_precision") or "not recorded" for runs in stages.values() for run in runs}
    return "precision " + ", ".join(sorted(used))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--width", type=float, default=2.0, help="allowed distance in reference seed std's")
    args = parser.parse_args()
    reference, candidate = by_stage(args.reference), by_stage(args.candidate)
    common = [stage for stage in reference if stage in candidate]
    print(f"reference {args.reference} ({precisions(reference)}); candidate {args.candidate} ({precisions(candidate)})")
    print(f"within: candidate mean inside reference mean ± {args.width:g} x std over seeds\n")
    print("| stage | n | " + " | ".join(f"{metric} ref | {metric} cand | within" for metric in METRICS) + " | who pays same |")
    print("|---|---:|" + "---:|---:|---|" * len(METRICS) + "---|")
    outside, differing = [], []
    for stage in common:
        cells = []
        for metric in METRICS:
            ref = [run[metric] for run in reference[stage] if run.get(metric) is not None]
            cand = [run[metric] for run in candidate[stage] if run.get(metric) is not None]
            if not ref or not cand:
                cells.append("– | – | –")
                continue
            (ref_mean, ref_std), (cand_mean, cand_std) = mean_std(ref), mean_std(cand)
            within = abs(cand_mean - ref_mean) <= args.width * ref_std + 1e-12
            if not within:
                outside.append(f"{stage} {metric}")
            cells.append(f"{ref_mean:.4f} ± {ref_std:.4f} | {cand_mean:.4f} ± {cand_std:.4f} | {'yes' if within else 'NO'}")
        same = who_pays(reference[stage]) == who_pays(candidate[stage])
        if not same:
            differing.append(f"{stage}: {sorted(who_pays(reference[stage]))} vs {sorted(who_pays(candidate[stage]))}")
        print(f"| {stage} | {len(candidate[stage])} | " + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")
    print(f"\noutside the reference's spread: {', '.join(outside) or 'none'}")
    print("who pays differs: " + ("; ".join(differing) or "nowhere"))


if __name__ == "__main__":
    main()
