"""``GroupEntityComparison``: a token classifier (NER tagger) measured by entity F1 per group and per entity type,
and against a reference tagger on the same sentences: the token-classification counterpart of
:class:`~lmshrink.metrics.comparison.GroupComparison`, with the same interface (``observe``, ``compute``,
``scalars``, ``report``), so ``GroupMetrics`` and the study use either without knowing which.

F1 is over words and spans, never sub-tokens: a word's prediction is its first sub-token's, and words cut off by
``max_length`` count as predicted ``O`` (:func:`~lmshrink.metrics.entities.word_predictions`). Against the
reference, each group's F1 delta gets its paired bootstrap interval and an approximate-randomization p-value,
Holm-corrected over groups (:mod:`lmshrink.metrics.entities`).
"""

from __future__ import annotations

import math

from torch import nn

from lmshrink.metrics.comparison import ComparisonReport
from lmshrink.metrics.entities import (
    SentenceEntityCounts,
    entity_bootstrap,
    entity_scores,
    paired_randomization_p,
    word_predictions,
)
from lmshrink.metrics.groups import on_cpu
from lmshrink.metrics.significance import holm
from lmshrink.metrics.spans import entity_types

SIGNIFICANCE = 0.05
SUMMARY = ("f1", "precision", "recall", "worst_group_f1", "group_gap", "macro_f1")


def _number(value) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


class GroupEntityComparison(nn.Module):
    """Entity F1 per group and type of a tagger and, with a ``reference`` name, of the reference tagger.

    ``observe(outputs, batch)``: ``outputs["preds"]`` ``[B, T]`` tag ids per sub-token (and ``reference_preds``),
    ``batch["word_labels"]`` ``[B, W]`` (every word's gold tag, truncated ones included), ``batch["word_starts"]``
    ``[B, W]`` (each word's first sub-token, -1 where none), ``groups``, ``index``.
    """

    metric = "f1"

    def __init__(self, group_names: list[str], tag_names: list[str], reference: str | None = None,
                 resamples: int = 1000, seed: int = 0) -> None:
        """``resamples`` (seeded by ``seed``) of the sentences drive the F1 intervals and the randomization test:
        F1 has no closed-form interval, and sentences are the unit the errors cluster in."""
        super().__init__()
        self.resamples, self.seed = resamples, seed
        if "O" not in tag_names:
            raise ValueError(f"the tag set {tag_names} has no 'O' tag")
        self.group_names, self.tag_names, self.reference = list(group_names), list(tag_names), reference
        self.type_names = entity_types(self.tag_names)
        self.outside_id = self.tag_names.index("O")
        counts = {"model": SentenceEntityCounts(self.tag_names, self.type_names, len(self.group_names))}
        if reference:
            counts["reference"] = SentenceEntityCounts(self.tag_names, self.type_names, len(self.group_names))
        self.metrics = nn.ModuleDict(counts)

    def observe(self, outputs: dict, batch: dict) -> None:
        for name, key in (("model", "preds"), ("reference", "reference_preds")):
            if name in self.metrics:
                predicted = word_predictions(outputs[key], batch["word_starts"], batch["word_labels"], self.outside_id)
                self.metrics[name].update(predicted, batch["word_labels"], batch["groups"], batch["index"])

    def compute(self) -> dict[str, dict]:
        """Per tagger, the gathered per-sentence counts and their scores (a collective under DDP)."""
        results = {}
        for name, metric in self.metrics.items():
            gathered = on_cpu(metric.compute())  # scored on the host, as on every device
            results[name] = gathered | {"scores": entity_scores(gathered["counts"], gathered["membership"])}
        return results

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def scalars(self, results: dict, prefix: str, per_group: bool = True) -> dict[str, float]:
        """``<prefix>/f1`` ... ``<prefix>/worst_group_f1``, per group ``<prefix>/f1/<g>`` (and ``delta/<g>`` against
        the reference), per type ``<prefix>/type_f1/<type>``, the reference's ``<prefix>/<reference>_f1`` ...;
        values not measured (NaN) are left out."""
        scores = results["model"]["scores"]
        scalars = {f"{prefix}/{key}": float(scores[key]) for key in SUMMARY}
        scalars |= {f"{prefix}/type_f1/{kind}": float(value) for kind, value in zip(self.type_names, scores["type_f1"])}
        ref = self.reference
        if ref:
            scalars |= {f"{prefix}/{ref}_{key}": float(results["reference"]["scores"][key]) for key in SUMMARY}
        if per_group:
            for g, name in enumerate(self.group_names):
                scalars[f"{prefix}/f1/{name}"] = float(scores["group_f1"][g])
                if ref:
                    scalars[f"{prefix}/delta/{name}"] = float(scores["group_f1"][g]
                                                              - results["reference"]["scores"]["group_f1"][g])
        return {key: value for key, value in scalars.items() if not math.isnan(value)}

    def report(self, results: dict, title: str) -> ComparisonReport:
        """The final report: per group F1 / precision / recall with their interval (and against the reference its
        F1, the delta, its paired interval and Holm-corrected randomization p), per type, overall."""
        resamples, seed = self.resamples, self.seed
        model = results["model"]
        scores, membership = model["scores"], model["membership"]
        reference = results.get("reference")
        intervals = (entity_bootstrap(model["counts"], membership, reference["counts"] if reference else None,
                                      resamples, seed) if resamples > 0 and len(model["index"]) else None)
        p_values = holm_p = None
        if reference is not None:
            p_values = (paired_randomization_p(model["counts"], reference["counts"], membership, resamples, seed)
                        if resamples > 0 else [math.nan] * len(self.group_names))
            holm_p = holm(p_values)
        groups = []
        for g, name in enumerate(self.group_names):
            f1 = _number(scores["group_f1"][g])
            row = {"group": name, "n": int(scores["group_sentences"][g]), "entities": int(scores["group_entities"][g]),
                   "f1": f1, "precision": float(scores["group_precision"][g]),
                   "recall": float(scores["group_recall"][g]),
                   "delta_to_avg": None if f1 is None else f1 - float(scores["f1"])}
            if intervals is not None:
                row["ci_low"], row["ci_high"] = intervals["group_f1"][g]
            if reference is not None:
                reference_f1 = _number(reference["scores"]["group_f1"][g])
                row |= {"reference_f1": reference_f1,
                        "delta_to_reference": None if f1 is None or reference_f1 is None else f1 - reference_f1,
                        "p_value": _number(p_values[g]), "p_holm": _number(holm_p[g])}
                if intervals is not None:
                    row["delta_ci_low"], row["delta_ci_high"] = intervals["group_delta"][g]
            groups.append(row)
        types = {kind: {"f1": _number(scores["type_f1"][k]), "precision": float(scores["type_precision"][k]),
                        "recall": float(scores["type_recall"][k]), "support": int(scores["type_support"][k])}
                 for k, kind in enumerate(self.type_names)}
        record = {"metric": self.metric, **{key: _number(scores[key]) for key in SUMMARY}, "types": types,
                  "groups": groups}
        if intervals is not None:
            record |= {"worst_group_f1_ci": list(intervals["worst_group_f1"]), "bootstrap_resamples": resamples}
        if reference is not None:
            record |= {"reference_name": self.reference,
                       self.reference: {key: _number(reference["scores"][key]) for key in SUMMARY},
                       "significant_groups": [row["group"] for row in groups
                                              if row["p_holm"] is not None and row["p_holm"] < SIGNIFICANCE]}
        columns = ["group", "n", "entities", "f1", "precision", "recall", "ci_low", "ci_high"]
        if reference is not None:
            columns += ["reference_f1", "delta_to_reference", "delta_ci_low", "delta_ci_high", "p_holm"]
        data = [[row.get(column) for column in columns] for row in groups]
        return ComparisonReport(record, self._table(title, record, columns), columns, data)

    def _table(self, title: str, record: dict, columns: list[str]) -> str:
        """Fixed-width text: one line per group (worst marked), one per entity type, the summary."""
        width = max(len("group"), *(len(name) for name in self.group_names), *(len(k) for k in self.type_names))
        measured = [row for row in record["groups"] if row["f1"] is not None]
        worst = min(measured, key=lambda row: row["f1"])["group"] if measured else None

        def cell(value, size: int) -> str:
            return f"{'–':>{size}}" if value is None else (f"{value:>{size}d}" if isinstance(value, int)
                                                           else f"{value:>{size}.4f}")

        sizes = {column: max(8, len(column)) for column in columns[1:]}
        lines = [title, f"{'group':<{width}}  " + "  ".join(f"{column:>{sizes[column]}}" for column in columns[1:])]
        for row in record["groups"]:
            mark = "*" if (row.get("p_holm") or 1) < SIGNIFICANCE else ""
            lines.append(f"{row['group']:<{width}}  "
                         + "  ".join(cell(row.get(column), sizes[column]) for column in columns[1:])
                         + mark + ("  <- worst" if row["group"] == worst else ""))
        lines.append(f"{'type':<{width}}  {'support':>8}  {'f1':>8}  {'precision':>9}  {'recall':>8}")
        for kind, values in record["types"].items():
            lines.append(f"{kind:<{width}}  {values['support']:>8d}  {cell(values['f1'], 8)}  {values['precision']:>9.4f}"
                         f"  {values['recall']:>8.4f}")
        summary = "  ".join(f"{key}={record[key]:.4f}" for key in SUMMARY if record[key] is not None)
        if "worst_group_f1_ci" in record:
            low, high = record["worst_group_f1_ci"]
            summary += f"  worst_group_f1 95% CI=[{low:.4f}, {high:.4f}]"
        lines.append(summary)
        if self.reference:
            ref = record[self.reference]
            lines.append(f"{self.reference}: " + "  ".join(f"{key}={ref[key]:.4f}" for key in SUMMARY
                                                           if ref[key] is not None)
                         + f"  groups changed at Holm p<0.05: {', '.join(record['significant_groups']) or 'none'}")
        return "\n".join(lines)
