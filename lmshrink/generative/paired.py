"""A generative audit's headline numbers as weighted means over its items, for intervals over seeds and paired
bootstrap intervals of a model's difference to its teacher.

Every number of the audit is a mean over items scored alike for every model: prompts (expected maximum toxicity,
toxicity probability; per name group and their gap), sentence pairs (stereotype preference, per bias type) and
held-out windows (perplexity). Written as functions of one weight per item, the same code gives the plain
number (weights 1), its value on a bootstrap resample (weights: how often each item was drawn), and, applied to
two models with the same weights, the paired bootstrap of their difference. Resampling is stratified by group
(name group, bias type, prompt attribute), so every group keeps its size in every resample.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor

from lmshrink.generative.metrics import TOXIC_THRESHOLD
from lmshrink.metrics.significance import percentile_interval

PROMPT_BLOCKS = ("toxicity", "names")
PAIR_BLOCKS = ("crows_pairs", "stereoset")
BLOCKS = (*PROMPT_BLOCKS, *PAIR_BLOCKS, "windows")
COLUMNS = {"toxicity": ("max", "toxic", "mean"), "names": ("max", "toxic", "mean"), "crows_pairs": ("stereo",),
           "stereoset": ("stereo",), "windows": ("nll", "tokens")}
"""Per item: maximum score of its k continuations, whether one is toxic, their mean; whether the stereotypical
sentence is preferred; a window's summed NLL and its token count."""


def audit_items(record: dict, model: str) -> dict[str, list[dict]]:
    """One model's items from a ``generative_audit.json``: ``{block: [{"id", "group", ...raw outcome}]}`` in id
    order (an item's id is its position in the audit's dataset, the same for every model and seed)."""
    items = {block: [] for block in BLOCKS}
    for row in record["samples"][model]:
        items[row["source"]].append({"id": row["position"], "group": row["group"], "scores": row["scores"]})
    for row in record["pairs"][model]:
        items[row["source"]].append({"id": row["position"], "group": row["group"], "more": row["more"],
                                     "less": row["less"]})
    for row in record["windows"][model]:
        items["windows"].append({"id": row["position"], "group": "all", "nll": row["nll"], "tokens": row["tokens"]})
    return {block: sorted(rows, key=lambda row: row["id"]) for block, rows in items.items()}


def fingerprint(items: dict[str, list[dict]]) -> str:
    """Identifies the items a model was audited on (ids and groups per block), not its outcomes."""
    keys = {block: [(row["id"], row["group"]) for row in rows] for block, rows in items.items()}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def item_values(items: dict[str, list[dict]], threshold: float = TOXIC_THRESHOLD) -> dict[str, dict]:
    """``{block: {"ids", "groups", "values" [n, columns] float64}}`` (columns: :data:`COLUMNS`)."""
    table = {}
    for block, rows in items.items():
        if block in PROMPT_BLOCKS:
            values = [[max(row["scores"]), float(max(row["scores"]) >= threshold),
                       sum(row["scores"]) / len(row["scores"])] for row in rows]
        elif block in PAIR_BLOCKS:
            values = [[float(row["more"] > row["less"])] for row in rows]
        else:
            values = [[row["nll"], float(row["tokens"])] for row in rows]
        table[block] = {"ids": [row["id"] for row in rows], "groups": [row["group"] for row in rows],
                        "values": torch.tensor(values, dtype=torch.float64).view(len(rows), len(COLUMNS[block]))}
    return table


def mean_over_seeds(tables: list[dict[str, dict]], what: str = "runs") -> dict[str, dict]:
    """The item-wise mean of several runs on the same items (e.g. one model's sampling seeds)."""
    first = tables[0]
    for table in tables[1:]:
        for block in first:
            if table[block]["ids"] != first[block]["ids"]:
                raise ValueError(f"{what} were audited on different {block} items; refusing to pair them")
    return {block: {**first[block], "values": torch.stack([table[block]["values"] for table in tables]).mean(0)}
            for block in first}


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (weights @ values) / weights.sum(1)


def statistics(table: dict[str, dict], weights: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Every headline number of one model, ``[B]`` each, under per-item ``weights`` (``{block: [B, n]}``; None:
    every item once, ``B = 1``). Keys as the audit's summary: ``toxicity/expected_max_toxicity``,
    ``names/<group>/toxicity_probability``, ``names/group_gap_mean_toxicity``, ``stereoset/<bias type>/
    stereotype_preference``, ``windowed_perplexity`` ..."""
    out = {}
    for block, data in table.items():
        values, groups = data["values"], data["groups"]
        if not groups:
            continue
        w = weights[block] if weights is not None else torch.ones(1, len(groups), dtype=torch.float64)
        if block == "windows":
            out["windowed_perplexity"] = torch.exp((w @ values[:, 0]) / (w @ values[:, 1]))
            continue
        names = list(dict.fromkeys(groups))
        members = {name: torch.tensor([group == name for group in groups]) for name in names}
        if block in PAIR_BLOCKS:
            out[f"{block}/stereotype_preference"] = _weighted_mean(values[:, 0], w)
            for name in names:
                out[f"{block}/{name}/stereotype_preference"] = _weighted_mean(values[members[name], 0],
                                                                              w[:, members[name]])
            continue
        out[f"{block}/expected_max_toxicity"] = _weighted_mean(values[:, 0], w)
        out[f"{block}/toxicity_probability"] = _weighted_mean(values[:, 1], w)
        if block == "names":
            means = []
            for name in names:
                part = w[:, members[name]]
                out[f"names/{name}/expected_max_toxicity"] = _weighted_mean(values[members[name], 0], part)
                out[f"names/{name}/toxicity_probability"] = _weighted_mean(values[members[name], 1], part)
                means.append(_weighted_mean(values[members[name], 2], part))
            stacked = torch.stack(means, 1)
            out["names/group_gap_mean_toxicity"] = stacked.amax(1) - stacked.amin(1)
    return out


def stratified_weights(table: dict[str, dict], resamples: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``{block: [resamples, n]}``: how often each item is drawn when every group is resampled within itself."""
    weights = {}
    for block, data in table.items():
        groups = data["groups"]
        w = torch.zeros(resamples, len(groups), dtype=torch.float64)
        for name in dict.fromkeys(groups):
            index = torch.tensor([i for i, group in enumerate(groups) if group == name])
            draws = index[torch.randint(len(index), (resamples, len(index)), generator=generator)]
            w.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
        weights[block] = w
    return weights


def paired_delta_intervals(model: dict[str, dict], reference: dict[str, dict], resamples: int = 1000,
                           seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of ``statistic(model) - statistic(reference)`` for every statistic, both
    evaluated on the same resamples of the items they share (paired; stratified by group)."""
    for block in reference:
        if model[block]["ids"] != reference[block]["ids"]:
            raise ValueError(f"the model and its reference were audited on different {block} items")
    weights = stratified_weights(reference, resamples, torch.Generator().manual_seed(seed))
    ours, theirs = statistics(model, weights), statistics(reference, weights)
    return {key: percentile_interval(ours[key] - theirs[key], level) for key in theirs}
