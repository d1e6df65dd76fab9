"""The per-group numbers beyond accuracy, with their uncertainty, for the final table and JSON record.

Inputs are the ``compute()`` results of the metrics (summed or gathered across ranks, so every rank gets the
same numbers); the output is plain floats:

- per group: ``ci_low`` / ``ci_high`` (Wilson 95 % interval of the accuracy), ``ece``, ``brier``,
  ``mean_confidence``; against a reference also ``flip_rate``, ``model_only_correct``,
  ``reference_only_correct``, ``p_value`` (exact McNemar), ``p_holm`` (Holm over the present groups),
  ``delta_ci_low`` / ``delta_ci_high`` (Tango's paired score interval of the delta to the reference),
  ``kl_to_reference``;
- overall: ``worst_group_acc_ci`` (simultaneous Clopper-Pearson), ``interval_methods`` (which method each
  interval and p-value uses), ``ece``, ``brier`` (the multiclass Brier score: a sum over classes, 0-2),
  ``mean_confidence``, ``reliability`` (the
  reliability diagram's bins), and against a reference ``flip_rate``, ``kl_to_reference``, ``significant_groups``
  (``p_holm < 0.05``).
"""

from __future__ import annotations

import math

from torch import Tensor

from lmshrink.metrics.significance import (
    METHODS,
    holm,
    mcnemar_exact_p,
    tango_interval,
    wilson_interval,
    worst_group_interval,
)

SIGNIFICANCE = 0.05


def _float(value) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def reliability(calibration: dict[str, Tensor]) -> dict[str, list[float]]:
    """The reliability diagram's points: per non-empty confidence bin, its example count, accuracy and mean
    confidence (a calibrated model has accuracy = confidence)."""
    count, correct, confidence = (calibration[key].tolist() for key in ("bin_count", "bin_correct", "bin_confidence"))
    kept = [b for b, n in enumerate(count) if n > 0]
    return {"count": [int(count[b]) for b in kept], "accuracy": [correct[b] / count[b] for b in kept],
            "confidence": [confidence[b] / count[b] for b in kept]}


def beyond_accuracy(group_names: list[str], accuracy: dict[str, Tensor], calibration: dict[str, Tensor],
                    agreement: dict[str, Tensor] | None = None) -> tuple[dict, list[dict]]:
    """``(overall, per_group)``; ``accuracy`` from :class:`~lmshrink.metrics.groups.GroupAccuracy`, ``calibration``
    from :class:`~lmshrink.metrics.calibration_error.GroupCalibration`, ``agreement`` (with a reference) from
    :class:`~lmshrink.metrics.agreement.GroupAgreement`. Absent groups get None everywhere."""
    present = accuracy["group_present"].tolist()
    correct, totals = accuracy["group_correct"].long().tolist(), accuracy["group_total"].long().tolist()
    per_group = []
    for g, name in enumerate(group_names):
        if not present[g]:
            per_group.append({"group": name})
            continue
        low, high = wilson_interval(correct[g], totals[g])
        per_group.append({"group": name, "ci_low": low, "ci_high": high,
                          **{key: _float(calibration[f"group_{key}"][g]) for key in ("ece", "brier", "mean_confidence")}})
    overall = {key: _float(calibration[key]) for key in ("ece", "brier", "mean_confidence")}
    overall["reliability"] = reliability(calibration)
    if any(present):
        overall["worst_group_acc_ci"] = list(worst_group_interval(
            [k for k, shown in zip(correct, present) if shown], [n for n, shown in zip(totals, present) if shown]))
    overall["interval_methods"] = {key: method for key, method in METHODS.items()
                                   if agreement is not None or key in ("ci", "worst_group_acc_ci")}
    if agreement is None:
        return overall, per_group
    p_values = [mcnemar_exact_p(int(agreement["group_model_only_correct"][g]),
                                int(agreement["group_reference_only_correct"][g])) if present[g] else math.nan
                for g in range(len(group_names))]
    adjusted = holm(p_values)
    for g, row in enumerate(per_group):
        if not present[g]:
            continue
        row |= {"flip_rate": _float(agreement["group_flip_rate"][g]),
                "model_only_correct": int(agreement["group_model_only_correct"][g]),
                "reference_only_correct": int(agreement["group_reference_only_correct"][g]),
                "p_value": p_values[g], "p_holm": adjusted[g],
                "kl_to_reference": _float(agreement["group_kl_to_reference"][g])}
        row["delta_ci_low"], row["delta_ci_high"] = tango_interval(row["model_only_correct"],
                                                                   row["reference_only_correct"], totals[g])
    overall |= {"flip_rate": _float(agreement["flip_rate"]), "kl_to_reference": _float(agreement["kl_to_reference"]),
                "model_only_correct": int(agreement["model_only_correct"]),
                "reference_only_correct": int(agreement["reference_only_correct"]),
                "p_value": mcnemar_exact_p(int(agreement["model_only_correct"]),
                                           int(agreement["reference_only_correct"])),
                "significant_groups": [name for name, p in zip(group_names, adjusted)
                                       if not math.isnan(p) and p < SIGNIFICANCE]}
    return overall, per_group
