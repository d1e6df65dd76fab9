"""The generative study's report: who pays, in toxicity, bias and perplexity, when a causal LM is compressed.

Per model (stage), every number of the audit (:func:`lmshrink.generative.paired.statistics`): held-out perplexity
over windows, expected maximum toxicity and toxicity probability (real prompts; per name group), the name-group
gap of mean toxicity, CrowS-Pairs and StereoSet stereotype preference (per bias type). Two intervals each:

- over sampling seeds: mean and 95 % Student-t interval of the per-seed values (what another seed would give;
  clipped to [0, 1] for shares and scores);
- of the difference to the teacher: paired percentile bootstrap over the items (prompts, pairs, windows),
  stratified by group, each item's outcome averaged over the seeds first (models audited on the same items with
  the same sampling seeds, so their difference is paired). The difference shown is the one of those
  seed-averaged items; it is "larger than its interval" when the interval excludes 0.

Files: ``report.md``, ``results.jsonl``, ``toxicity_vs_perplexity.png``, ``group_delta_heatmap.png`` and a W&B
table (offline unless asked).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from lmshrink.generative.paired import item_values, mean_over_seeds, paired_delta_intervals, statistics  # noqa: E402
from lmshrink.study.report import (_cell, _save, batch_dependence_notes, card_links, check_same_eval_set,  # noqa: E402
                                   mean_std, wandb_run)

HEADLINE = {"windowed_perplexity": "perplexity (windows)", "toxicity/expected_max_toxicity": "exp. max toxicity",
            "toxicity/toxicity_probability": "toxicity prob.", "names/group_gap_mean_toxicity": "name-group gap",
            "crows_pairs/stereotype_preference": "CrowS-Pairs stereo", "stereoset/stereotype_preference":
            "StereoSet stereo"}
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student-t 97.5 % quantiles for 1..30 degrees of freedom (beyond: 1.96)."""
RESAMPLES = 1000
SHORT = {"expected_max_toxicity": " (exp. max tox.)", "stereotype_preference": " (stereo pref.)"}
"""How the heatmap names a per-group statistic."""


def seed_interval(values: list[float], bounded: bool = True) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the 95 % Student-t interval of the mean over seeds (no interval from one seed),
    clipped to [0, 1] for a ``bounded`` statistic (shares and scores; perplexity is not)."""
    mean, std = mean_std(values)
    if std is None:
        return mean, None, None
    half = (T_975[len(values) - 2] if len(values) <= 31 else 1.96) * std / math.sqrt(len(values))
    low, high = mean - half, mean + half
    return (mean, max(low, 0.0), min(high, 1.0)) if bounded else (mean, low, high)


def aggregate(results: list[dict], resamples: int = RESAMPLES) -> list[dict]:
    """One row per stage (first-seen order; the first is the teacher): every statistic with its interval over
    seeds, and its difference to the teacher with the paired bootstrap interval."""
    check_same_eval_set(results)
    by_stage: dict[str, list[dict]] = {}
    for result in results:
        by_stage.setdefault(result["stage"], []).append(result)
    averaged, rows = {}, []
    for stage, runs in by_stage.items():
        tables = [item_values(run["items"], run["scorer"]["threshold"]) for run in runs]
        per_seed = [{key: float(value[0]) for key, value in statistics(table).items()} for table in tables]
        averaged[stage] = mean_over_seeds(tables, f"the seeds of {stage}")
        rows.append({"stage": stage, "kind": runs[0]["kind"], "from": runs[0]["from"], "scheme": runs[0]["scheme"],
                     "seeds": [run["seed"] for run in runs], "scorer": runs[0]["scorer"],
                     "params": runs[0].get("params"), "size_mb": runs[0].get("size_mb"),
                     "values": {key: seed_interval([seed[key] for seed in per_seed], key != "windowed_perplexity")
                                for key in per_seed[0]}})
    teacher = rows[0]["stage"]
    reference = {key: float(value[0]) for key, value in statistics(averaged[teacher]).items()}
    for row in rows:
        if row["stage"] == teacher:
            row["delta"], row["interval"], row["larger"] = {}, {}, {}
            continue
        ours = {key: float(value[0]) for key, value in statistics(averaged[row["stage"]]).items()}
        row["delta"] = {key: ours[key] - reference[key] for key in reference}
        row["interval"] = paired_delta_intervals(averaged[row["stage"]], averaged[teacher], resamples)
        row["larger"] = {key: not (low <= 0 <= high) for key, (low, high) in row["interval"].items()}
    return rows


def group_keys(row: dict) -> list[str]:
    """Per-group statistics: name groups' expected maximum toxicity, bias types' stereotype preference."""
    return [key for key in row["values"] if key.count("/") == 2 and not key.endswith("toxicity_probability")]


def _value(value: tuple[float, float | None, float | None], digits: int) -> str:
    mean, low, high = value
    interval = "" if low is None else f" [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{mean:.{digits}f}{interval}"


def _delta(row: dict, key: str, digits: int) -> str:
    low, high = row["interval"][key]
    return f"{row['delta'][key]:+.{digits}f}{'*' if row['larger'][key] else ''} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _digits(key: str) -> int:
    return 1 if key == "windowed_perplexity" else 3


def markdown(rows: list[dict], eval_set: str, title: str) -> str:
    scorer = rows[0]["scorer"]
    lines = [f"# {title}", "", f"Audit items fingerprint `{eval_set}`; toxicity scored by {scorer['name']} "
             f"{scorer['version']} (toxic >= {scorer['threshold']}). Values: mean over sampling seeds [95 % Student-t "
             "interval over seeds]. Deltas to the teacher: of the seed-averaged items, [paired percentile bootstrap "
             f"95 % interval, {RESAMPLES} resamples of the prompts, pairs and windows, stratified by group]; * the "
             "interval excludes 0; per-group intervals are not corrected for the number of groups (at 95 %, about one "
             "in 20 unchanged groups excludes 0 by chance). Perplexity: held-out Wikipedia text in fixed windows (the "
             "pruning papers' figure).",
             "", "| model | from | n | params (M) | size (MB) | " + " | ".join(HEADLINE.values()) + " |",
             "|---|---|---:|---:|---:|" + "---:|" * len(HEADLINE)]
    for row in rows:
        cells = [_value(row["values"][key], _digits(key)) if key in row["values"] else "–" for key in HEADLINE]
        lines.append(f"| {row['stage']} | {row['from'] or '–'} | {len(row['seeds'])} | {row['params'] / 1e6:.1f} | "
                     f"{row['size_mb']:.1f} | " + " | ".join(cells) + " |")
    lines += batch_dependence_notes(rows, "samples and pair scores", "prompts and sentences")
    keys = [key for key in HEADLINE if key in rows[0]["values"]]
    lines += ["", "## Difference to the teacher", "", "| model | " + " | ".join(HEADLINE[k] for k in keys) + " |",
              "|---|" + "---:|" * len(keys)]
    for row in rows[1:]:
        lines.append(f"| {row['stage']} | " + " | ".join(_delta(row, key, _digits(key)) for key in keys) + " |")
    groups = group_keys(rows[0])
    lines += ["", "## Per group (name groups: expected max toxicity; bias types: stereotype preference)", "",
              "| group | " + " | ".join(row["stage"] for row in rows) + " |", "|---|" + "---:|" * len(rows)]
    for key in groups:
        cells = [_value(rows[0]["values"][key], 3)] + [_delta(row, key, 3) for row in rows[1:]]
        lines.append(f"| {_cell(key)} | " + " | ".join(cells) + " |")
    lines += ["", "## Who pays (differences larger than their interval)", ""]
    for row in rows[1:]:
        changed = [key for key in [*keys, *groups] if row["larger"][key]]
        text = "; ".join(f"{_cell(key)} {_delta(row, key, _digits(key))}" for key in changed)
        lines.append(f"- **{row['stage']}**: {text or 'no difference larger than its interval'}")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], directory: Path) -> list[Path]:
    """Expected maximum toxicity vs perplexity (seed intervals as error bars); per-group delta heatmap."""
    figure, axis = plt.subplots(figsize=(6, 5))
    for row in rows:
        x, y = row["values"]["windowed_perplexity"], row["values"]["toxicity/expected_max_toxicity"]
        xerr = [[x[0] - x[1]], [x[2] - x[0]]] if x[1] is not None else None
        yerr = [[y[0] - y[1]], [y[2] - y[0]]] if y[1] is not None else None
        axis.errorbar(x[0], y[0], xerr=xerr, yerr=yerr, fmt="o", capsize=3)
        axis.annotate(row["stage"], (x[0], y[0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set(xscale="log", xlabel="held-out perplexity (windows, log)", ylabel="expected maximum toxicity",
             title="Toxicity vs perplexity (95 % intervals over seeds)")
    low, high = axis.get_xlim()
    axis.set_xticks([tick for tick in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
                     if low <= tick <= high] or [low, high])
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_formatter(NullFormatter())
    paths = [_save(figure, directory / "toxicity_vs_perplexity.png")]
    groups = group_keys(rows[0])
    compressed = rows[1:]
    figure, axis = plt.subplots(figsize=(3.5 + 0.9 * max(1, len(compressed)), 1.5 + 0.32 * len(groups)))
    matrix = [[100 * row["delta"][key] for row in compressed] for key in groups] or [[0.0] * len(compressed)]
    limit = max(1.0, max(abs(value) for line in matrix for value in line if not math.isnan(value)))
    image = axis.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for x, row in enumerate(compressed):  # hatched: the paired bootstrap interval includes 0
        for y, key in enumerate(groups):
            if not row["larger"][key]:
                axis.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.55",
                                         linewidth=0))
    labels = [key.rpartition("/")[0] + SHORT.get(key.rpartition("/")[2], "") for key in groups]
    axis.set_yticks(range(len(groups)), labels, fontsize=7)
    axis.set_xticks(range(len(compressed)), [row["stage"] for row in compressed], rotation=40, ha="right",
                    fontsize=7)
    figure.colorbar(image, label="delta to teacher (points)\nred: more toxic / more stereotyped")
    axis.set_title("Per-group delta to the teacher\n(hatched: its interval includes 0)", fontsize=9)
    paths.append(_save(figure, directory / "group_delta_heatmap.png"))
    return paths


def write_generative_report(results: list[dict], directory: Path, title: str,
                            wandb_options: dict | None = None) -> list[dict]:
    """Write ``results.jsonl``, ``report.md`` and the plots into ``directory`` (and a W&B table); return the rows."""
    rows = aggregate(results)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(result) + "\n" for result in results))
    (directory / "report.md").write_text(markdown(rows, results[0]["eval_set"], title) + card_links(results, directory))
    images = plots(rows, directory)
    if wandb_options is not None:
        import wandb

        run = wandb_run(wandb_options, directory)
        keys = list(rows[0]["values"])
        columns = ["model", "seeds", "params", "size_mb", *keys, *[f"delta/{key}" for key in keys]]
        data = [[row["stage"], len(row["seeds"]), row["params"], row["size_mb"],
                 *[row["values"][key][0] for key in keys], *[row["delta"].get(key) for key in keys]] for row in rows]
        run.log({"study/table": wandb.Table(columns=columns, data=data),
                 **{f"study/{path.stem}": wandb.Image(str(path)) for path in images}})
        run.finish()
    return rows
