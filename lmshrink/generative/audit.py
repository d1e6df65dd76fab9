"""Per-model accumulation of an audit's raw results and their summary (plain Python/torch, no Lightning).

Each rank adds what it measured; the caller gathers every rank's :class:`AuditRecords` (padding rows are never
added) and :func:`summarize` turns the union into metrics, so every prompt and pair counts exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmshrink.generative.metrics import (
    TOXIC_THRESHOLD,
    expected_max_toxicity,
    group_gap,
    per_group,
    perplexity,
    stereotype_preference,
    toxicity_probability,
)


@dataclass
class AuditRecords:
    """Raw results of one model: generated samples with scores, pair outcomes, held-out NLL."""

    samples: list[dict] = field(default_factory=list)
    """One row per prompt: source, group, position (its index in the datamodule's dataset), prompt,
    continuations, scores (k floats)."""
    pairs: list[dict] = field(default_factory=list)
    """One row per pair: source, group, position, log-likelihood of the more and the less stereotypical sentence."""
    nll_sum: float = 0.0
    nll_tokens: int = 0
    windows: list[dict] = field(default_factory=list)
    """One row per held-out window (the pruning papers' perplexity): its index, summed NLL and scored tokens."""

    def merge(self, other: AuditRecords) -> None:
        self.samples += other.samples
        self.pairs += other.pairs
        self.nll_sum += other.nll_sum
        self.nll_tokens += other.nll_tokens
        self.windows += other.windows


def _toxicity_block(rows: list[dict], threshold: float) -> dict:
    if not rows:
        return {}
    scores = torch.tensor([row["scores"] for row in rows])
    groups = [row["group"] for row in rows]
    emt = per_group(scores, groups, expected_max_toxicity)
    probability = per_group(scores, groups, lambda s: toxicity_probability(s, threshold))
    mean = per_group(scores, groups, lambda s: float(s.mean()))
    return {
        "prompts": len(rows),
        "expected_max_toxicity": expected_max_toxicity(scores),
        "toxicity_probability": toxicity_probability(scores, threshold),
        "mean_toxicity": float(scores.mean()),
        "by_group": {group: {"prompts": groups.count(group), "expected_max_toxicity": emt[group],
                             "toxicity_probability": probability[group], "mean_toxicity": mean[group]}
                     for group in emt},
        "group_gap_mean_toxicity": group_gap(mean),
    }


def _bias_block(rows: list[dict]) -> dict:
    if not rows:
        return {}
    more = torch.tensor([row["more"] for row in rows], dtype=torch.float64)
    less = torch.tensor([row["less"] for row in rows], dtype=torch.float64)
    groups = [row["group"] for row in rows]
    stacked = torch.stack([more, less], dim=1)
    by_group = per_group(stacked, groups, lambda pairs: stereotype_preference(pairs[:, 0], pairs[:, 1]))
    return {"pairs": len(rows), "stereotype_preference": stereotype_preference(more, less),
            "by_group": {group: {"pairs": groups.count(group), "stereotype_preference": value}
                         for group, value in by_group.items()}}


def summarize(records: AuditRecords, threshold: float = TOXIC_THRESHOLD) -> dict:
    """Every metric of one model: toxicity of real prompts and of name-templated prompts (per group, with the
    name-group gap), stereotype preference per source and bias type, and held-out perplexity: per sentence (each
    after the BOS) and over fixed windows of concatenated text (the pruning papers' figure)."""
    by_source = {}
    for row in records.samples:
        by_source.setdefault(row["source"], []).append(row)
    pairs_by_source = {}
    for row in records.pairs:
        pairs_by_source.setdefault(row["source"], []).append(row)
    window_tokens = sum(row["tokens"] for row in records.windows)
    windowed = ({"windowed_perplexity": perplexity(sum(row["nll"] for row in records.windows), window_tokens),
                 "windowed_tokens": window_tokens} if window_tokens else {})
    return {
        "toxicity": _toxicity_block(by_source.get("toxicity", []), threshold),
        "names": _toxicity_block(by_source.get("names", []), threshold),
        "crows_pairs": _bias_block(pairs_by_source.get("crows_pairs", [])),
        "stereoset": _bias_block(pairs_by_source.get("stereoset", [])),
        "perplexity": perplexity(records.nll_sum, records.nll_tokens),
        "heldout_tokens": records.nll_tokens,
        **windowed,
    }


HEADLINE = (("toxicity", "expected_max_toxicity"), ("toxicity", "toxicity_probability"),
            ("names", "group_gap_mean_toxicity"), ("crows_pairs", "stereotype_preference"),
            ("stereoset", "stereotype_preference"), ("perplexity",), ("windowed_perplexity",))
"""The numbers compared side by side across models (and logged as scalars)."""


def headline(summary: dict) -> dict[str, float]:
    values = {}
    for path in HEADLINE:
        value = summary
        for key in path:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        if isinstance(value, float):
            values["/".join(path)] = value
    return values


def group_scalars(summary: dict) -> dict[str, float]:
    """Per-group numbers as flat ``<block>/<group>/<metric>`` keys (for live logging next to the headline)."""
    values = {}
    for block in ("toxicity", "names", "crows_pairs", "stereoset"):
        for group, metrics in summary.get(block, {}).get("by_group", {}).items():
            for metric, value in metrics.items():
                if metric not in ("prompts", "pairs") and value == value:  # counts and NaN are not curves
                    values[f"{block}/{group}/{metric}"] = value
    return values
