"""The study report: every (stage, seed) result aggregated per model, as markdown, PNG plots and JSONL.

Only results evaluated on the same examples are compared: each carries the fingerprint of its test split, and a
mix is refused with the stages named. Deltas are per group, against the teacher: paired, each compressed model
against its own seed's teacher on the same examples, then mean ± std over seeds (older results without paired
deltas: difference of the means). A delta is marked significant (``*``) when its Holm-corrected exact McNemar
p is below 0.05 in every seed; "who pays" lists only those, with their paired bootstrap intervals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

NUMBERS = ("params", "size_mb", "gflops", "latency_ms", "avg_acc", "worst_group_acc", "macro_f1", "ece", "flip_rate")
ALPHA = 0.05


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def check_same_eval_set(results: list[dict]) -> str:
    sets = {}
    for result in results:
        sets.setdefault(result.get("eval_set"), []).append(f"{result['stage']}/seed={result['seed']}")
    if None in sets or len(sets) != 1:
        detail = "; ".join(f"{fingerprint}: {', '.join(names)}" for fingerprint, names in sets.items())
        raise ValueError(f"results were evaluated on different (or unidentified) test sets, refusing to compare "
                         f"them: {detail}")
    return next(iter(sets))


def aggregate(results: list[dict]) -> list[dict]:
    """One row per stage (in first-seen order): mean/std of every number and of every group's accuracy, and the
    per-group delta to the teacher (the first stage)."""
    check_same_eval_set(results)
    by_stage: dict[str, list[dict]] = {}
    for result in results:
        by_stage.setdefault(result["stage"], []).append(result)
    rows = []
    for stage, runs in by_stage.items():
        row = {"stage": stage, "kind": runs[0]["kind"], "from": runs[0]["from"], "scheme": runs[0]["scheme"],
               "seeds": [run["seed"] for run in runs]}
        for key in NUMBERS:
            values = [run[key] for run in runs if run.get(key) is not None]
            if values:
                row[key], row[f"{key}_std"] = mean_std(values)
        row["reliability"] = pooled_reliability(runs)
        groups = runs[0]["groups"]
        row["groups"] = {name: mean_std([run["groups"][name]["accuracy"] for run in runs
                                         if run["groups"][name]["accuracy"] is not None] or [math.nan])[0]
                         for name in groups}
        rows.append(row)
    teacher = rows[0]["groups"]
    for row, runs in zip(rows, by_stage.values()):
        row["delta"], row["delta_std"], row["significant"], row["intervals"] = {}, {}, {}, {}
        row["tested"] = all("p_holm" in group for run in runs for group in run["groups"].values())
        for name in teacher:
            paired = [run["groups"][name].get("delta_to_reference") for run in runs]
            if row is rows[0] or any(value is None for value in paired):
                row["delta"][name] = row["groups"][name] - teacher[name]
                row["delta_std"][name] = None
            else:
                row["delta"][name], row["delta_std"][name] = mean_std(paired)
            p_values = [run["groups"][name].get("p_holm") for run in runs]
            row["significant"][name] = row is not rows[0] and all(p is not None and p < ALPHA for p in p_values)
            row["intervals"][name] = [(run["groups"][name].get("delta_ci_low"), run["groups"][name].get("delta_ci_high"))
                                      for run in runs]
    return rows


def _cell(text: str) -> str:
    """Group names such as ``stereotype|gender`` would split a markdown table cell."""
    return text.replace("|", "\\|")


def _pm(row: dict, key: str, digits: int = 4) -> str:
    if key not in row:
        return "–"
    std = row.get(f"{key}_std")
    return f"{row[key]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _interval(bounds: tuple[float | None, float | None]) -> str:
    low, high = bounds
    return "–" if low is None or high is None else f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def markdown(rows: list[dict], eval_set: str, title: str) -> str:
    lines = [f"# {title}", "", f"Test set fingerprint `{eval_set}`; mean ± std over seeds (n = seeds run); "
             "FLOPs: encoder, pruning-spec model at s = mean val length; latency: CPU, batch of 32 real val examples, "
             "all models timed side by side when this report was written (alternating rounds, median). ECE: 15 "
             "equal-width bins, top label. Flips: share of test predictions that differ from the teacher's.", "",
             "| model | from | n | params (M) | size (MB) | GFLOPs | latency (ms) | avg acc | worst-group acc | ECE | "
             "flips |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['stage']} | {row['from'] or '–'} | {len(row['seeds'])} | {row['params'] / 1e6:.1f} | "
                     f"{row['size_mb']:.1f} | {row['gflops']:.3g} | {row['latency_ms']:.1f} | {_pm(row, 'avg_acc')} | "
                     f"{_pm(row, 'worst_group_acc')} | {_pm(row, 'ece')} | {_pm(row, 'flip_rate')} |")
    groups = list(rows[0]["delta"])
    lines += ["", "## Per-group accuracy delta to the teacher (points; worst group of each model in bold; * Holm "
              "p < 0.05 in every seed)", "", "| model | " + " | ".join(_cell(group) for group in groups) + " |",
              "|---|" + "---:|" * len(groups)]
    for row in rows[1:]:
        worst = min(groups, key=lambda name: row["delta"][name] if not math.isnan(row["delta"][name]) else math.inf)
        cells = []
        for g in groups:
            text = f"{100 * row['delta'][g]:+.1f}" + ("*" if row["significant"][g] else "")
            cells.append(f"**{text}**" if g == worst else text)
        lines.append(f"| {row['stage']} | " + " | ".join(cells) + " |")
    lines += ["", "## Who pays (significant changes only)", "",
              "A per-group delta counts here only when the exact McNemar test of that group's paired change, "
              "Holm-corrected over the groups, has p < 0.05 in every seed; intervals are the paired bootstrap 95 % "
              "intervals of the delta, one per seed (points).", ""]
    for row in rows[1:]:
        if not row["tested"]:  # results written before the study compared each model with its teacher
            losers = sorted((value, name) for name, value in row["delta"].items() if not math.isnan(value))[:2]
            text = ", ".join(f"{_cell(name)} ({100 * value:+.1f})" for value, name in losers if value < 0)
            lines.append(f"- **{row['stage']}**: not tested (no paired test in these results); largest drops: "
                         f"{text or 'none'}")
            continue
        changed = sorted((row["delta"][name], name) for name in groups if row["significant"][name])
        if not changed:
            lines.append(f"- **{row['stage']}**: no group changes significantly")
            continue
        parts = [f"{_cell(name)} {100 * value:+.1f} " + " ".join(_interval(b) for b in row["intervals"][name])
                 for value, name in changed]
        lines.append(f"- **{row['stage']}**: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], directory: Path) -> list[Path]:
    """worst-group vs average accuracy; accuracy vs FLOPs and vs size (Pareto view); per-group delta heatmap."""
    paths = []
    figure, axis = plt.subplots(figsize=(6, 5))
    for row in rows:
        axis.errorbar(row["avg_acc"], row["worst_group_acc"], xerr=row.get("avg_acc_std") or 0,
                      yerr=row.get("worst_group_acc_std") or 0, fmt="o", capsize=3)
        axis.annotate(row["stage"], (row["avg_acc"], row["worst_group_acc"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.set(xlabel="average accuracy", ylabel="worst-group accuracy", title="Who pays: worst group vs average")
    paths.append(_save(figure, directory / "worst_vs_avg.png"))
    for key, label in (("gflops", "encoder GFLOPs"), ("size_mb", "size in memory (MB)")):
        figure, axis = plt.subplots(figsize=(6, 5))
        for metric, marker in (("avg_acc", "o"), ("worst_group_acc", "^")):
            axis.scatter([row[key] for row in rows], [row[metric] for row in rows], marker=marker,
                         label=metric.replace("_", " "))
        for row in rows:
            axis.annotate(row["stage"], (row[key], row["avg_acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set(xlabel=label, ylabel="accuracy", title=f"Accuracy vs {label}")
        axis.legend()
        paths.append(_save(figure, directory / f"accuracy_vs_{key}.png"))
    groups = list(rows[0]["delta"])
    figure, axis = plt.subplots(figsize=(1 + 0.8 * len(groups), 1 + 0.45 * len(rows)))
    matrix = [[100 * row["delta"][group] for group in groups] for row in rows[1:]] or [[0.0] * len(groups)]
    limit = max(1.0, max(abs(value) for line in matrix for value in line if not math.isnan(value)))
    image = axis.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for y, row in enumerate(rows[1:]):  # hatched: tested, not significant in every seed (Holm p >= 0.05 somewhere)
        for x, group in enumerate(groups):
            if row["tested"] and not row["significant"][group]:
                axis.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.55",
                                         linewidth=0))
    axis.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(len(rows) - 1), [row["stage"] for row in rows[1:]], fontsize=7)
    figure.colorbar(image, label="accuracy delta to teacher (points)")
    axis.set_title("Per-group delta to the teacher (hatched: not significant)")
    paths.append(_save(figure, directory / "group_delta_heatmap.png"))
    if any(row.get("reliability") for row in rows):  # results written before calibration was recorded have none
        paths.append(reliability_diagram(rows, directory / "reliability.png"))
    return paths


def reliability_diagram(rows: list[dict], path: Path) -> Path:
    """Accuracy vs confidence per confidence bin, one line per model (its seeds' bins summed), over the diagonal
    of perfect calibration."""
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for row in rows:
        points = row.get("reliability")
        if points:
            axis.plot(points["confidence"], points["accuracy"], marker="o", markersize=3, linewidth=1,
                      label=row["stage"])
    axis.set(xlabel="confidence (top label)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
             title="Reliability (15 bins)")
    axis.legend(fontsize=7)
    return _save(figure, path)


def pooled_reliability(runs: list[dict]) -> dict | None:
    """One model's reliability points over its seeds: bins matched by confidence range, counts summed."""
    bins: dict[int, list[float]] = {}
    for run in runs:
        points = run.get("reliability")
        if not points:
            return None
        for count, accuracy, confidence in zip(points["count"], points["accuracy"], points["confidence"]):
            slot = bins.setdefault(min(int(confidence * 15), 15), [0, 0.0, 0.0])
            slot[0] += count
            slot[1] += accuracy * count
            slot[2] += confidence * count
    order = sorted(bins)
    return {"count": [bins[b][0] for b in order], "accuracy": [bins[b][1] / bins[b][0] for b in order],
            "confidence": [bins[b][2] / bins[b][0] for b in order]}


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(results: list[dict], directory: Path, title: str, wandb_options: dict | None = None) -> list[dict]:
    """Write ``results.jsonl``, ``report.md`` and the plots into ``directory`` (and a W&B table); return the rows."""
    rows = aggregate(results)  # refuses results from different test sets
    eval_set = results[0]["eval_set"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(result) + "\n" for result in results))
    (directory / "report.md").write_text(markdown(rows, eval_set, title))
    images = plots(rows, directory)
    if wandb_options is not None:
        _log_wandb(rows, images, directory, wandb_options)
    return rows


def _log_wandb(rows: list[dict], images: list[Path], directory: Path, options: dict) -> None:
    import wandb

    run = wandb.init(project=options.get("project", "lmshrink"), name=options.get("name", directory.name),
                     dir=str(directory), mode="offline" if options.get("offline", True) else "online",
                     reinit="finish_previous")
    groups = list(rows[0]["delta"])
    columns = ["model", "seeds", "params", "size_mb", "gflops", "latency_ms", "avg_acc", "avg_acc_std",
               "worst_group_acc", "worst_group_acc_std", "ece", "flip_rate", *[f"delta/{group}" for group in groups],
               *[f"significant/{group}" for group in groups]]
    data = [[row["stage"], len(row["seeds"]), row["params"], row["size_mb"], row["gflops"], row["latency_ms"],
             row["avg_acc"], row.get("avg_acc_std"), row["worst_group_acc"], row.get("worst_group_acc_std"),
             row.get("ece"), row.get("flip_rate"), *[row["delta"][group] for group in groups],
             *[row["significant"][group] for group in groups]] for row in rows]
    run.log({"study/table": wandb.Table(columns=columns, data=data),
             **{f"study/{path.stem}": wandb.Image(str(path)) for path in images}})
    run.finish()
