"""The per-group table (group, n, accuracy, delta to average) shared by the terminal, W&B and JSON records."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import Tensor

TABLE_COLUMNS = ["group", "n", "accuracy", "delta_to_avg"]


@dataclass(frozen=True)
class GroupRow:
    group: str
    n: int
    accuracy: float | None
    """None when the group has no example in this split (reported as absent, never as 0)."""
    delta_to_avg: float | None


def group_rows(group_names: list[str], results: dict[str, Tensor]) -> list[GroupRow]:
    """One row per group from :func:`lmshrink.metrics.groups.group_metrics_from_counts` output."""
    avg = float(results["avg_acc"])
    rows = []
    for name, acc, n in zip(group_names, results["group_acc"].tolist(), results["group_total"].tolist()):
        if n == 0 or math.isnan(acc):
            rows.append(GroupRow(name, int(n), None, None))
        else:
            rows.append(GroupRow(name, int(n), acc, acc - avg))
    return rows


def group_deltas(rows: list[GroupRow], reference_rows: list[GroupRow]) -> list[float | None]:
    """Per group, accuracy minus the reference model's on the same split (None where the group is absent)."""
    return [None if row.accuracy is None else row.accuracy - ref.accuracy for row, ref in zip(rows, reference_rows)]


def summary(results: dict[str, Tensor]) -> dict[str, float]:
    """Scalar metrics of a split as plain floats (JSON-ready)."""
    return {key: float(results[key]) for key in ("avg_acc", "worst_group_acc", "group_gap", "macro_f1")}


def _detail_cells(detail: dict) -> str:
    """The 95 % interval, ECE and (against a reference) flip rate and Holm p of one group, fixed width."""
    if "ci_low" not in detail:
        return ""
    cells = f"  [{detail['ci_low']:.3f}, {detail['ci_high']:.3f}]"
    cells += f"  {detail['ece']:>6.4f}" if detail.get("ece") is not None else f"  {'':>6}"
    if "p_holm" in detail:
        mark = "*" if detail["p_holm"] < 0.05 else " "
        cells += f"  {detail['flip_rate']:>6.4f}  {detail['p_holm']:>6.4f}{mark}"
    return cells


def format_group_table(rows: list[GroupRow], title: str, scalars: dict[str, float], reference: str | None = None,
                       reference_rows: list[GroupRow] | None = None,
                       reference_scalars: dict[str, float] | None = None, details: list[dict] | None = None,
                       overall: dict | None = None) -> str:
    """A fixed-width text table; the worst present group is marked with ``<- worst``. With a ``reference`` model
    (teacher, dense, float) its accuracy and the delta to it (who pays) are two more columns. ``details`` and
    ``overall`` (:func:`lmshrink.metrics.beyond_accuracy.beyond_accuracy`) add the 95 % interval, ECE and, against
    the reference, the flip rate and the Holm-corrected McNemar p (``*`` below 0.05)."""
    present = [row for row in rows if row.accuracy is not None]
    worst = min(present, key=lambda row: row.accuracy).group if present else None
    width = max([len("group")] + [len(row.group) for row in rows])
    ref_width = max(8, len(reference or ""))
    header = f"{'group':<{width}}  {'n':>6}  {'accuracy':>8}  {'vs avg':>7}"
    if reference:
        header += f"  {reference:>{ref_width}}  {'vs ' + reference:>{ref_width + 3}}"
    details = details or [{} for _ in rows]
    if any("ci_low" in detail for detail in details):
        header += f"  {'95% CI':^14}  {'ECE':>6}" + (f"  {'flips':>6}  {'p_holm':>6}" if reference else "")
    lines = [title, header]
    deltas = group_deltas(rows, reference_rows) if reference_rows else [None] * len(rows)
    for index, row in enumerate(rows):
        if row.accuracy is None:
            lines.append(f"{row.group:<{width}}  {row.n:>6}  {'absent':>8}")
            continue
        line = f"{row.group:<{width}}  {row.n:>6}  {row.accuracy:>8.4f}  {row.delta_to_avg:>+7.4f}"
        if reference_rows:
            line += f"  {reference_rows[index].accuracy:>{ref_width}.4f}  {deltas[index]:>+{ref_width + 3}.4f}"
        line += _detail_cells(details[index])
        lines.append(line + ("  <- worst" if row.group == worst else ""))
    lines.append("  ".join(f"{key}={value:.4f}" for key, value in scalars.items()))
    if overall:
        parts = [f"{key}={overall[key]:.4f}" for key in ("ece", "brier", "flip_rate", "kl_to_reference")
                 if overall.get(key) is not None]
        if "worst_group_acc_ci" in overall:
            low, high = overall["worst_group_acc_ci"]
            parts.insert(0, f"worst_group_acc 95% CI=[{low:.4f}, {high:.4f}] (simultaneous Clopper-Pearson)")
        if "significant_groups" in overall:
            parts.append(f"groups changed at Holm p<0.05: {', '.join(overall['significant_groups']) or 'none'}")
        lines.append("  ".join(parts))
    if reference_scalars:
        lines.append(f"{reference}: " + "  ".join(f"{key}={value:.4f}" for key, value in reference_scalars.items()))
    return "\n".join(lines)


def rows_as_dicts(rows: list[GroupRow]) -> list[dict]:
    return [asdict(row) for row in rows]
