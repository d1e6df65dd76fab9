"""A pass/fail rule for a compressed model: which group drops are both large and significant.

Read from a comparison record (the ``group_metrics_<stage>.json`` of a run with a reference model, or a
quantization record): a group fails when its accuracy drop to the reference (entity-F1 drop for a token
classifier: the record's ``metric``) exceeds ``max_group_drop`` and its paired test (exact McNemar; for F1 the
approximate randomization test), Holm-corrected over the groups, has ``p_holm < alpha``. The worst-group check fails
when the worst-group accuracy drops by more than ``max_worst_group_drop`` and the candidate's worst group
changed significantly (``p_holm < alpha``). A drop within the noise of a small group never fails the gate; a
large significant one always does.
"""

from __future__ import annotations

from dataclasses import dataclass


class GateFailure(Exception):
    """The candidate failed the gate: the message lists each failed check (the command exits 1)."""


@dataclass(frozen=True)
class GateThresholds:
    """Largest accepted drops (accuracy points as fractions: 0.02 is 2 points) and the significance level."""

    max_worst_group_drop: float = 0.02
    max_group_drop: float = 0.05
    alpha: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_worst_group_drop", "max_group_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha} must be in (0, 1)")


WORST_KEYS = {"accuracy": "worst_group_acc", "f1": "worst_group_f1"}
"""The record's worst-group key of each metric (classifiers: accuracy; taggers: entity F1)."""


def gate_failures(record: dict, thresholds: GateThresholds) -> list[str]:
    """One line per failed check (empty: the candidate passes). The record's ``metric`` (``accuracy``, or ``f1``
    for a token classifier) is the number whose drops are checked."""
    reference = record.get("reference_name")
    if reference is None:
        raise ValueError("the record compares no reference model: evaluate with a reference (lmshrink.modules.Compare, "
                         "a distillation, a pruning or Quantize)")
    metric = record.get("metric", "accuracy")
    worst_key = WORST_KEYS[metric]
    failures = []
    groups = [group for group in record["groups"]
              if group.get(metric) is not None and group.get("delta_to_reference") is not None]
    for group in groups:
        drop = -group["delta_to_reference"]
        if drop > thresholds.max_group_drop and group["p_holm"] < thresholds.alpha:
            failures.append(
                f"group {group['group']}: {metric} {group[f'reference_{metric}']:.4f} -> {group[metric]:.4f} "
                f"(drop {drop:.4f} > {thresholds.max_group_drop}, Holm p = {group['p_holm']:.3g} < "
                f"{thresholds.alpha}, n = {group['n']})")
    worst_drop = record[reference][worst_key] - record[worst_key]
    if groups and worst_drop > thresholds.max_worst_group_drop:
        worst = min(groups, key=lambda group: group[metric])
        if worst["p_holm"] < thresholds.alpha:
            failures.append(
                f"worst group: {metric} {record[reference][worst_key]:.4f} -> {record[worst_key]:.4f} "
                f"(drop {worst_drop:.4f} > {thresholds.max_worst_group_drop}; the candidate's worst group "
                f"{worst['group']} changed with Holm p = {worst['p_holm']:.3g} < {thresholds.alpha})")
    return failures
