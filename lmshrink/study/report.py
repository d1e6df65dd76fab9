"""The study report: every (stage, seed) result aggregated per model, as markdown, PNG plots and JSONL.

Only results evaluated on the same examples are compared: each carries the fingerprint of its test split, and a
mix is refused with the stages named. The score is the evaluation's own metric: accuracy for sequence
classifiers, entity F1 (exact spans) for token classifiers; a study mixing them is refused. Deltas are per group,
against the teacher: paired, each compressed model against its own seed's teacher on the same examples, then
mean ± std over seeds (older results without paired deltas: difference of the means). A delta is marked
significant (``*``) when its Holm-corrected paired test (exact McNemar for accuracy, approximate randomization over
sentences for F1) has p below 0.05 in every seed; "who pays" lists only those, with their paired intervals
(Tango's score interval for accuracy, the bootstrap over sentences for F1).
"""

from __future__ import annotations

import json
import os
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from lmshrink.cards import card_file, has_card_record  # noqa: E402
from lmshrink.quantize.schemes import SCHEMES  # noqa: E402

ALPHA = 0.05


@dataclass(frozen=True)
class Score:
    """Where a study's score lives in its results, and how the report names it and its test."""

    metric: str  # a group's key in result["groups"][name], and the evaluation record's "metric"
    average: str  # overall score key of a result
    worst: str  # worst-group score key of a result
    label: str  # column and axis text
    test: str  # the paired test behind p_holm
    calibration: bool  # whether ECE and flips are measured (per-example predictions of one label)


SCORES = {
    "accuracy": Score("accuracy", "avg_acc", "worst_group_acc", "acc", "exact McNemar test", True),
    "f1": Score("f1", "f1", "worst_group_f1", "F1", "paired approximate-randomization test (sentences)", False),
}
MEASURES = ("params", "size_mb", "gflops", "latency_ms", "macro_f1", "ece", "flip_rate")


def score_of(results: list[dict]) -> Score:
    """The one metric of a set of results (results written before the metric was recorded are accuracy)."""
    metrics = {result.get("metric", "accuracy") for result in results}
    if len(metrics) != 1:
        raise ValueError(f"results mix metrics {sorted(metrics)} (sequence and token classifiers?); a report "
                         f"compares one task")
    return SCORES[metrics.pop()]


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
    """One row per stage (in first-seen order): mean/std of every number and of every group's score (accuracy or
    F1), and the per-group delta to the teacher (the first stage)."""
    check_same_eval_set(results)
    score = score_of(results)
    by_stage: dict[str, list[dict]] = {}
    for result in results:
        by_stage.setdefault(result["stage"], []).append(result)
    rows = []
    for stage, runs in by_stage.items():
        row = {"stage": stage, "kind": runs[0]["kind"], "from": runs[0]["from"], "scheme": runs[0]["scheme"],
               "seeds": [run["seed"] for run in runs], "metric": score.metric,
               "latency_compiled": all(run.get("latency_compiled") for run in runs)}
        for key in (score.average, score.worst, *MEASURES):
            values = [run[key] for run in runs if run.get(key) is not None]
            if values:
                row[key], row[f"{key}_std"] = mean_std(values)
        row["reliability"] = pooled_reliability(runs)
        groups = runs[0]["groups"]
        row["groups"] = {name: mean_std([run["groups"][name][score.metric] for run in runs
                                         if run["groups"][name][score.metric] is not None] or [math.nan])[0]
                         for name in groups}
        row["types"] = pooled_types(runs)
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


BOOTSTRAP_DELTA = "paired bootstrap 95 %"
"""The delta interval of results recorded before ``interval_methods`` was (and of entity F1 still)."""


def delta_interval_method(results: list[dict]) -> str:
    """How the results' per-group delta intervals were computed, as their records say (``interval_methods``; the
    shipped results predate it: the paired bootstrap)."""
    methods = {(result.get("interval_methods") or {}).get("delta_ci", BOOTSTRAP_DELTA) for result in results
               if result.get("from") is not None}
    return " / ".join(sorted(methods)) or BOOTSTRAP_DELTA


def batch_dependence_notes(rows: list[dict], outputs: str, inputs: str) -> list[str]:
    """A line per scheme that makes an example's outputs depend on the other examples of its batch
    (:attr:`~lmshrink.quantize.schemes.Scheme.batch_dependent`), naming its stages: their ``outputs`` move with
    which ``inputs`` share a batch, which their intervals over seeds (the same batches in every seed) do not show."""
    stages: dict[str, list[str]] = {}
    for row in rows:
        if row["scheme"] in SCHEMES and SCHEMES[row["scheme"]].batch_dependent:
            stages.setdefault(row["scheme"], []).append(row["stage"])
    notes = [f"- {', '.join(f'**{stage}**' for stage in names)} ({scheme}): {SCHEMES[scheme].batch_dependent}, so "
             f"their {outputs} depend on which {inputs} share a batch; their intervals over seeds do not include "
             "that (the same batches in every seed)." for scheme, names in stages.items()]
    return ["", *notes] if notes else []


def markdown(rows: list[dict], eval_set: str, title: str, interval: str = BOOTSTRAP_DELTA) -> str:
    score = SCORES[rows[0]["metric"]]
    name = "accuracy" if score.metric == "accuracy" else "entity F1"
    extra_header, extra_rule = (" ECE | flips |", "---:|---:|") if score.calibration else ("", "")
    compiled = [row.get("latency_compiled") for row in rows]
    lines = [f"# {title}", "", f"Test set fingerprint `{eval_set}`; mean ± std over seeds (n = seeds run); "
             "FLOPs: encoder, pruning-spec model at s = mean val length; latency: CPU, batch of 32 real val examples, "
             + ("every model compiled (torch.compile, compilation not timed), " if all(compiled) else
                "models marked (compiled) through torch.compile as they run (compilation not timed), the others "
                "eager, " if any(compiled) else "") +
             "all models timed side by side when this report was written (alternating rounds, median). "
             + ("ECE: 15 equal-width bins, top label. Flips: share of test predictions that differ from the teacher's."
                if score.calibration else "F1: exact entity spans over words (CoNLL / seqeval), micro over the test "
                "set; a group's F1 over its sentences."), "",
             f"| model | from | n | params (M) | size (MB) | GFLOPs | latency (ms) | avg {score.label} | worst-group "
             f"{score.label} |" + extra_header, "|---|---|---:|---:|---:|---:|---:|---:|---:|" + extra_rule]
    for row in rows:
        calibration = f" {_pm(row, 'ece')} | {_pm(row, 'flip_rate')} |" if score.calibration else ""
        lines.append(f"| {row['stage']} | {row['from'] or '–'} | {len(row['seeds'])} | {row['params'] / 1e6:.1f} | "
                     f"{row['size_mb']:.1f} | {row['gflops']:.3g} | {row['latency_ms']:.1f}"
                     f"{' (compiled)' if row.get('latency_compiled') and not all(compiled) else ''} | "
                     f"{_pm(row, score.average)} | {_pm(row, score.worst)} |" + calibration)
    lines += batch_dependence_notes(rows, "predictions", "examples")
    groups = list(rows[0]["delta"])
    lines += ["", f"## Per-group {name} delta to the teacher (points; worst group of each model in bold; * Holm "
              "p < 0.05 in every seed)", "", "| model | " + " | ".join(_cell(group) for group in groups) + " |",
              "|---|" + "---:|" * len(groups)]
    for row in rows[1:]:
        worst = min(groups, key=lambda g: row["delta"][g] if not math.isnan(row["delta"][g]) else math.inf)
        cells = []
        for g in groups:
            text = f"{100 * row['delta'][g]:+.1f}" + ("*" if row["significant"][g] else "")
            cells.append(f"**{text}**" if g == worst else text)
        lines.append(f"| {row['stage']} | " + " | ".join(cells) + " |")
    if any(row["types"] for row in rows):
        lines += _type_table(rows)
    lines += ["", "## Who pays (significant changes only)", "",
              f"A per-group delta counts here only when the {score.test} of that group's paired change, "
              f"Holm-corrected over the groups, has p < 0.05 in every seed; intervals are the {interval} "
              "intervals of the delta, one per seed (points).", ""]
    for row in rows[1:]:
        if not row["tested"]:  # results written before the study compared each model with its teacher
            losers = sorted((value, g) for g, value in row["delta"].items() if not math.isnan(value))[:2]
            text = ", ".join(f"{_cell(g)} ({100 * value:+.1f})" for value, g in losers if value < 0)
            lines.append(f"- **{row['stage']}**: not tested (no paired test in these results); largest drops: "
                         f"{text or 'none'}")
            continue
        changed = sorted((row["delta"][g], g) for g in groups if row["significant"][g])
        if not changed:
            lines.append(f"- **{row['stage']}**: no group changes significantly")
            continue
        parts = [f"{_cell(g)} {100 * value:+.1f} " + " ".join(_interval(b) for b in row["intervals"][g])
                 for value, g in changed]
        lines.append(f"- **{row['stage']}**: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def _type_table(rows: list[dict]) -> list[str]:
    """Per entity type F1 (mean over seeds) of every model, with the type's support in the test set."""
    types = list(rows[0]["types"])
    support = {kind: rows[0]["types"][kind]["support"] for kind in types}
    lines = ["", "## Per-type F1 (mean over seeds; support = gold entities in the test set)", "",
             "| model | " + " | ".join(f"{kind} ({support[kind]})" for kind in types) + " |",
             "|---|" + "---:|" * len(types)]
    for row in rows:
        cells = ["–" if row["types"].get(kind, {}).get("f1") is None else f"{row['types'][kind]['f1']:.3f}"
                 for kind in types]
        lines.append(f"| {row['stage']} | " + " | ".join(cells) + " |")
    return lines


def pooled_types(runs: list[dict]) -> dict:
    """Per entity type: mean F1 over the seeds that measured it, and its support ({} without types)."""
    if not all(run.get("types") for run in runs):
        return {}
    types = {}
    for kind, first in runs[0]["types"].items():
        values = [run["types"][kind]["f1"] for run in runs if run["types"][kind]["f1"] is not None]
        types[kind] = {"f1": mean_std(values)[0] if values else None, "support": first["support"]}
    return types


def plots(rows: list[dict], directory: Path) -> list[Path]:
    """worst-group vs average score; score vs FLOPs and vs size (Pareto view); per-group delta heatmap. Files are
    named by the metric: ``accuracy_vs_gflops.png``, ``f1_vs_gflops.png``."""
    score = SCORES[rows[0]["metric"]]
    text = "accuracy" if score.metric == "accuracy" else "entity F1"
    paths = []
    figure, axis = plt.subplots(figsize=(6, 5))
    for row in rows:
        axis.errorbar(row[score.average], row[score.worst], xerr=row.get(f"{score.average}_std") or 0,
                      yerr=row.get(f"{score.worst}_std") or 0, fmt="o", capsize=3)
        axis.annotate(row["stage"], (row[score.average], row[score.worst]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.set(xlabel=f"average {text}", ylabel=f"worst-group {text}", title="Who pays: worst group vs average")
    paths.append(_save(figure, directory / "worst_vs_avg.png"))
    for key, label in (("gflops", "encoder GFLOPs"), ("size_mb", "size in memory (MB)")):
        figure, axis = plt.subplots(figsize=(6, 5))
        for metric, marker in ((score.average, "o"), (score.worst, "^")):
            axis.scatter([row[key] for row in rows], [row[metric] for row in rows], marker=marker,
                         label=metric.replace("_", " "))
        for row in rows:
            axis.annotate(row["stage"], (row[key], row[score.average]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        axis.set(xlabel=label, ylabel=text, title=f"{text[0].upper() + text[1:]} vs {label}")
        axis.legend()
        paths.append(_save(figure, directory / f"{score.metric}_vs_{key}.png"))
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
    figure.colorbar(image, label=f"{text} delta to teacher (points)")
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


def card_links(results: list[dict], directory: Path) -> str:
    """The "Model cards" section: per stage and seed, a link (relative to the report) to the card of the model
    directory it measured; a stage quantized in memory for its evaluation has no directory, and says so. Empty when
    no model directory is at hand (a report rebuilt from a results file alone, like the shipped ones)."""
    if not any(has_card_record(result["model_dir"]) for result in results):
        return ""
    lines = ["", "## Model cards", "",
             "Each model directory carries its own Hugging Face card (`README.md`) with its per-group results "
             "against its teacher, how it was made and how to load it:", ""]
    stages: dict[str, list[dict]] = {}
    for result in results:
        stages.setdefault(result["stage"], []).append(result)
    for stage, runs in stages.items():
        if any(run.get("scheme") for run in runs):
            lines.append(f"- **{stage}**: quantized in memory for its evaluation ({runs[0]['scheme']}), not saved: "
                         f"no directory, no card")
            continue
        links = []
        for run in sorted(runs, key=lambda run: (run["seed"] is None, run["seed"] or 0)):
            label = f"seed {run['seed']}" if run["seed"] is not None else "card"
            links.append(f"[{label}]({os.path.relpath(card_file(run['model_dir']), directory)})"
                         if has_card_record(run["model_dir"]) else f"{label}: no card")
        lines.append(f"- **{stage}**: " + ", ".join(links))
    return "\n".join(lines) + "\n"


def precision_note(results: list[dict]) -> str:
    """Which precision the models were built and evaluated in, and on which machine (results written before the
    study recorded it say nothing)."""
    used = {}
    for result in results:
        if result.get("run_precision"):
            used.setdefault((result["run_precision"], result.get("cpu") or "?"), []).append(result["stage"])
    if not used:
        return ""
    parts = [f"{precision} on {cpu}" + (f" ({', '.join(dict.fromkeys(stages))})" if len(used) > 1 else "")
             for (precision, cpu), stages in used.items()]
    return ("\n\nPrecision of each model's build and evaluation (quantize stages are evaluated in 32-true): "
            + "; ".join(parts) + ".\n")


def write_report(results: list[dict], directory: Path, title: str, wandb_options: dict | None = None) -> list[dict]:
    """Write ``results.jsonl``, ``report.md`` and the plots into ``directory`` (and a W&B table); return the rows."""
    rows = aggregate(results)  # refuses results from different test sets
    eval_set = results[0]["eval_set"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(result) + "\n" for result in results))
    (directory / "report.md").write_text(markdown(rows, eval_set, title, delta_interval_method(results))
                                         + precision_note(results) + card_links(results, directory))
    images = plots(rows, directory)
    if wandb_options is not None:
        _log_wandb(rows, images, directory, wandb_options)
    return rows


def _log_wandb(rows: list[dict], images: list[Path], directory: Path, options: dict) -> None:
    import wandb

    run = wandb_run(options, directory)
    score = SCORES[rows[0]["metric"]]
    groups = list(rows[0]["delta"])
    columns = ["model", "seeds", "params", "size_mb", "gflops", "latency_ms", score.average, f"{score.average}_std",
               score.worst, f"{score.worst}_std", "ece", "flip_rate", *[f"delta/{group}" for group in groups],
               *[f"significant/{group}" for group in groups]]
    data = [[row["stage"], len(row["seeds"]), row["params"], row["size_mb"], row["gflops"], row["latency_ms"],
             row[score.average], row.get(f"{score.average}_std"), row[score.worst], row.get(f"{score.worst}_std"),
             row.get("ece"), row.get("flip_rate"), *[row["delta"][group] for group in groups],
             *[row["significant"][group] for group in groups]] for row in rows]
    run.log({"study/table": wandb.Table(columns=columns, data=data),
             **{f"study/{path.stem}": wandb.Image(str(path)) for path in images}})
    run.finish()


def wandb_run(options: dict, directory: Path):
    """The study's W&B run (offline unless ``offline: false``), its files under the report directory."""
    import wandb

    return wandb.init(project=options.get("project", "lmshrink"), name=options.get("name", directory.name),
                      dir=str(directory), mode="offline" if options.get("offline", True) else "online",
                      reinit="finish_previous")
