"""``GroupComparison``: a model measured per group, and against a reference model on the same examples.

The one mechanism behind every "who pays" number: the distillation student against its teacher, the pruned
model against the dense one (``GroupMetrics``), the quantized model against the float one (``Quantize``).
Plain torch (no Lightning): callers feed it batches, call :meth:`compute` (a collective under DDP: sums and
gathers the states of every rank), then turn the results into live scalars (:meth:`scalars`) and into one
report (:meth:`report`: the terminal table, the W&B table and the JSON record, in one layout for all three).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from lmshrink.metrics.agreement import GroupAgreement
from lmshrink.metrics.beyond_accuracy import beyond_accuracy
from lmshrink.metrics.calibration_error import N_BINS, GroupCalibration
from lmshrink.metrics.groups import GroupAccuracy, on_cpu
from lmshrink.metrics.group_table import TABLE_COLUMNS, format_group_table, group_deltas, group_rows, rows_as_dicts, summary

DETAIL_COLUMNS = ("ci_low", "ci_high", "ece", "brier", "flip_rate", "model_only_correct", "reference_only_correct",
                  "p_value", "p_holm", "delta_ci_low", "delta_ci_high", "kl_to_reference")
"""Per-group columns beyond accuracy in the W&B table and the JSON record (those measured in the run)."""


def check_comparison_options(bootstrap_resamples: int | None, calibration_bins: int, option: str) -> None:
    """Refuse impossible settings of a comparison at construction; ``option`` names where they were given."""
    if bootstrap_resamples is not None and bootstrap_resamples < 0:
        raise ValueError(f"{option}.bootstrap_resamples={bootstrap_resamples} must be >= 0")
    if calibration_bins < 1:
        raise ValueError(f"{option}.calibration_bins={calibration_bins} must be >= 1")


@dataclass
class ComparisonReport:
    """What a finished evaluation reports: ``record`` (JSON-ready), ``table`` (terminal text), and the W&B table
    as ``columns`` and ``data``."""

    record: dict
    table: str
    columns: list[str]
    data: list[list]


class GroupComparison(nn.Module):
    """Per-group accuracy and calibration of a model and, with a ``reference`` name, of the reference model,
    with flips, divergence, paired tests and intervals between the two (see :mod:`lmshrink.metrics.beyond_accuracy`).

    ``update`` takes class ids ``preds`` ``[B]``, ``logits`` ``[B, C]`` (None: no calibration), ``labels`` ``[B]``
    (``IGNORE_INDEX`` rows skipped), ``groups`` ``[B]`` or ``[B, G]``, and, with a reference, ``reference_preds`` /
    ``reference_logits``. Every interval and test is computed from counts summed across ranks
    (:mod:`lmshrink.metrics.significance`), so nothing per example is kept.
    """

    metric = "accuracy"

    def __init__(self, group_names: list[str], num_classes: int, reference: str | None = None,
                 calibration_bins: int = N_BINS) -> None:
        super().__init__()
        self.group_names, self.reference = list(group_names), reference
        num_groups = len(self.group_names)
        metrics = {"model": GroupAccuracy(num_groups, num_classes),
                   "calibration": GroupCalibration(num_groups, num_classes, calibration_bins)}
        if reference:
            metrics |= {"reference": GroupAccuracy(num_groups, num_classes),
                        "reference_calibration": GroupCalibration(num_groups, num_classes, calibration_bins),
                        "agreement": GroupAgreement(num_groups)}
        self.metrics = nn.ModuleDict(metrics)

    def update(self, preds: Tensor, logits: Tensor | None, labels: Tensor, groups: Tensor,
               reference_preds: Tensor | None = None, reference_logits: Tensor | None = None) -> None:
        self.metrics["model"].update(preds, labels, groups)
        if logits is not None:
            self.metrics["calibration"].update(logits, labels, groups)
        if self.reference:
            self.metrics["reference"].update(reference_preds, labels, groups)
            if logits is not None and reference_logits is not None:
                self.metrics["reference_calibration"].update(reference_logits, labels, groups)
                self.metrics["agreement"].update(logits, reference_logits, labels, groups)

    def observe(self, outputs: dict, batch: dict) -> None:
        """:meth:`update` from a validation/test step's outputs and its batch (the ``GroupMetrics`` contract)."""
        self.update(outputs["preds"], outputs.get("logits"), batch["labels"], batch["groups"],
                    outputs.get("reference_preds"), outputs.get("reference_logits"))

    def compute(self) -> dict[str, dict]:
        """Every metric's results (a collective under DDP: every rank must call it), on the CPU: the intervals, tests
        and tables made from them are small host-side work, the same on every device."""
        return {name: on_cpu(metric.compute()) for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def scalars(self, results: dict, prefix: str, per_group: bool = True) -> dict[str, float]:
        """Live scalars: ``<prefix>/avg_acc`` ..., ``<prefix>/ece`` ..., ``<prefix>/<reference>_<metric>``,
        ``<prefix>/flip_rate``, ``<prefix>/kl_to_<reference>``, and per present group ``<prefix>/acc/<g>``,
        ``<prefix>/group_ece/<g>``, ``<prefix>/delta/<g>``, ``<prefix>/group_flip_rate/<g>``. Values that were not
        measured (NaN) are left out, so no curve shows a made-up 0."""
        model, calibration = results["model"], results["calibration"]
        scalars = {f"{prefix}/{key}": value for key, value in summary(model).items()}
        scalars |= {f"{prefix}/{key}": float(calibration[key]) for key in ("ece", "brier", "mean_confidence")}
        ref = self.reference
        if ref:
            scalars |= {f"{prefix}/{ref}_{key}": value for key, value in summary(results["reference"]).items()}
            scalars[f"{prefix}/{ref}_ece"] = float(results["reference_calibration"]["ece"])
            scalars[f"{prefix}/flip_rate"] = float(results["agreement"]["flip_rate"])
            scalars[f"{prefix}/kl_to_{ref}"] = float(results["agreement"]["kl_to_reference"])
        if per_group:
            for g, (name, present) in enumerate(zip(self.group_names, model["group_present"])):
                if not present:
                    continue
                scalars[f"{prefix}/acc/{name}"] = float(model["group_acc"][g])
                scalars[f"{prefix}/group_ece/{name}"] = float(calibration["group_ece"][g])
                if ref:
                    scalars[f"{prefix}/delta/{name}"] = float(model["group_acc"][g] - results["reference"]["group_acc"][g])
                    scalars[f"{prefix}/group_flip_rate/{name}"] = float(results["agreement"]["group_flip_rate"][g])
        return {key: value for key, value in scalars.items() if not math.isnan(value)}

    def report(self, results: dict, title: str) -> ComparisonReport:
        """The final per-group report of one evaluation (intervals and tests from the gathered counts)."""
        rows = group_rows(self.group_names, results["model"])
        scalars = summary(results["model"])
        overall, details = beyond_accuracy(self.group_names, results["model"], results["calibration"],
                                           results.get("agreement"))
        columns, data = list(TABLE_COLUMNS), [[row.group, row.n, row.accuracy, row.delta_to_avg] for row in rows]
        reference_record, reference_rows, reference_scalars, deltas = {}, None, None, []
        if self.reference:
            reference_rows = group_rows(self.group_names, results["reference"])
            reference_scalars = summary(results["reference"]) | {"ece": float(results["reference_calibration"]["ece"])}
            deltas = group_deltas(rows, reference_rows)
            columns += [f"{self.reference}_accuracy", f"delta_to_{self.reference}"]
            data = [line + [ref.accuracy, delta] for line, ref, delta in zip(data, reference_rows, deltas)]
            reference_record = {"reference_name": self.reference, self.reference: reference_scalars,
                                f"delta_to_{self.reference}": dict(zip(self.group_names, deltas))}
        extra = [key for key in DETAIL_COLUMNS if any(key in row for row in details)]
        columns += extra
        data = [line + [row.get(key) for key in extra] for line, row in zip(data, details)]
        table = format_group_table(rows, title, scalars, self.reference, reference_rows, reference_scalars, details,
                                   overall)
        groups = [row | {key: value for key, value in detail.items() if key != "group"}
                  for row, detail in zip(rows_as_dicts(rows), details)]
        if self.reference:  # the same keys whatever the reference is called (teacher, dense, float)
            for row, ref, delta in zip(groups, reference_rows, deltas):
                row |= {"reference_accuracy": ref.accuracy, "delta_to_reference": delta}
        record = {**scalars, **overall, "groups": groups, **reference_record}
        return ComparisonReport(record, table, columns, data)
