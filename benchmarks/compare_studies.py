"""Whether a study run another way (bf16-mixed, another machine) stays within the seed intervals of a reference run.

Reads two ``results.jsonl`` of the same study (e.g. the shipped float32 ``docs/results/study/results.jsonl`` and a
bf16-mixed run's) and, for every stage both hold, prints the mean ± std over seeds of average accuracy, worst-group
accuracy and ECE, and whether the candidate's mean lies within the reference's mean ± ``--width`` standard
deviations over seeds (default 2: about the 95 % spread of one seed's result); then both "who pays" lists (group
changes significant in every seed) and whether they are the same. The numbers are the report's own
(:func:`lmshrink.study.report.aggregate`), so they match the two reports' tables.

For a generative study (``task: generative``) the values are its report's headline statistics per stage (held-out
perplexity, expected maximum toxicity, toxicity probability, name-group gap, CrowS-Pairs and StereoSet
preference), "within" means inside the reference's 95 % interval over seeds as its report gives it
(:func:`lmshrink.study.generative_report.aggregate`; ``--width`` does not apply), an interval of width 0 (the
same value in every seed) admitting only that value, and "who pays" the statistics whose paired bootstrap interval
of the difference to the teacher excludes 0.

    python benchmarks/compare_studies.py REFERENCE.jsonl CANDIDATE.jsonl [--width 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmshrink.data.text_files import read_json_lines
from lmshrink.study import generative_report
from lmshrink.study.report import aggregate, score_of
from lmshrink.errors import run_command


def precisions(results: list[dict]) -> str:
    """The precisions the results were built and evaluated in (results written before lmshrink recorded it: none)."""
    return "precision " + ", ".join(sorted({result.get("run_precision") or "not recorded" for result in results}))


def who_pays(row: dict) -> list[str]:
    """The groups the report marks: their change to the teacher significant (Holm) in every seed."""
    return sorted(name for name, significant in row["significant"].items() if significant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--width", type=float, default=2.0, help="allowed distance in reference seed std's")
    args = parser.parse_args()
    for path in (args.reference, args.candidate):
        if not path.is_file():
            parser.error(f"{path}: no such results.jsonl (a study writes it to <output_dir>/report/)")
    reference_results, candidate_results = read_json_lines(args.reference), read_json_lines(args.candidate)
    print(f"reference {args.reference} ({precisions(reference_results)}); candidate {args.candidate} "
          f"({precisions(candidate_results)})")
    if reference_results[0].get("task") == "generative":
        compare_generative(reference_results, candidate_results)
        return
    score = score_of(reference_results)
    metrics = (score.average, score.worst, "ece")
    reference = {row["stage"]: row for row in aggregate(reference_results)}  # the report's own rows
    candidate = {row["stage"]: row for row in aggregate(candidate_results)}
    print(f"within: candidate mean inside reference mean ± {args.width:g} x std over seeds\n")
    print("| stage | n | " + " | ".join(f"{metric} ref | {metric} cand | within" for metric in metrics) + " | who pays same |")
    print("|---|---:|" + "---:|---:|---|" * len(metrics) + "---|")
    outside, differing = [], []
    for stage in (stage for stage in reference if stage in candidate):
        ref, cand = reference[stage], candidate[stage]
        cells = []
        for metric in metrics:
            if ref.get(metric) is None or cand.get(metric) is None:
                cells.append("– | – | –")
                continue
            ref_std, cand_std = ref.get(f"{metric}_std") or 0.0, cand.get(f"{metric}_std") or 0.0
            within = abs(cand[metric] - ref[metric]) <= args.width * ref_std + 1e-12
            if not within:
                outside.append(f"{stage} {metric}")
            cells.append(f"{ref[metric]:.4f} ± {ref_std:.4f} | {cand[metric]:.4f} ± {cand_std:.4f} | "
                         f"{'yes' if within else 'NO'}")
        same = who_pays(ref) == who_pays(cand)
        if not same:
            differing.append(f"{stage}: {who_pays(ref)} vs {who_pays(cand)}")
        print(f"| {stage} | {len(cand['seeds'])} | " + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")
    print(f"\noutside the reference's spread: {', '.join(outside) or 'none'}")
    print("who pays differs: " + ("; ".join(differing) or "nowhere"))


GENERATIVE_HEADLINE = ("windowed_perplexity", "toxicity/expected_max_toxicity", "toxicity/toxicity_probability",
                       "names/group_gap_mean_toxicity", "crows_pairs/stereotype_preference",
                       "stereoset/stereotype_preference")


def compare_generative(reference_results: list[dict], candidate_results: list[dict]) -> None:
    """Each headline statistic of each stage: the candidate's mean inside the reference's interval over seeds."""
    reference = {row["stage"]: row for row in generative_report.aggregate(reference_results)}
    candidate = {row["stage"]: row for row in generative_report.aggregate(candidate_results)}
    print("within: candidate mean inside the reference's 95 % interval over seeds (the report's)\n")
    print("| stage | statistic | reference [interval] | candidate | within |\n|---|---|---|---:|---|")
    outside, differing, total = [], [], 0
    for stage in (stage for stage in reference if stage in candidate):
        ref, cand = reference[stage], candidate[stage]
        for key in (key for key in GENERATIVE_HEADLINE if key in ref["values"] and key in cand["values"]):
            (mean, low, high), other = ref["values"][key], cand["values"][key][0]
            low, high = (mean, mean) if low is None else (low, high)
            tolerance = 1e-6 * max(1.0, abs(mean))  # float rounding of a statistic equal in every seed
            within = low - tolerance <= other <= high + tolerance
            total += 1
            if not within:
                outside.append(f"{stage} {key}")
            print(f"| {stage} | {key} | {mean:.4f} [{low:.4f}, {high:.4f}] | {other:.4f} | {'yes' if within else 'NO'} |")
        marked = [sorted(key for key, larger in row["larger"].items() if larger) for row in (ref, cand)]
        if marked[0] != marked[1]:
            differing.append(f"{stage}: only reference {sorted(set(marked[0]) - set(marked[1]))}, only candidate "
                             f"{sorted(set(marked[1]) - set(marked[0]))}")
    print(f"\n{total - len(outside)} of {total} within; outside the reference's interval: {', '.join(outside) or 'none'}")
    print("who pays differs: " + ("; ".join(differing) or "nowhere"))


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
