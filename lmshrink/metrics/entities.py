"""Entity-level precision, recall and F1 per group and per entity type, exact under DDP, with intervals and paired
tests against a reference tagger.

:class:`SentenceEntityCounts` keeps, per sentence, the true-positive, predicted and gold span counts of every entity
type (a ``cat`` state gathered from every rank, ordered by the sentence's index in the split): every score is a sum
of those, so DDP equals one process, and the same per-sentence counts drive the bootstrap (resampling sentences,
as NER evaluations resample, never tokens) and the paired approximate-randomization test (Yeh 2000; the test
the NLP significance literature recommends for F1, which is not a mean of per-example outcomes and so has no
McNemar test).

F1 follows CoNLL / seqeval (micro over spans; precision 0 when nothing is predicted) except where a group has
neither a gold nor a predicted entity: there F1 is not measured (None), not 0, and the group is left out of the
worst group.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lmshrink.metrics.groups import IGNORE_INDEX, as_membership
from lmshrink.metrics.significance import percentile_interval
from lmshrink.metrics.spans import entity_spans

TP, PRED, GOLD = 0, 1, 2


def word_predictions(token_preds: Tensor, word_starts: Tensor, word_labels: Tensor, outside_id: int) -> Tensor:
    """Per word, the tag predicted at its first sub-token (``word_starts`` ``[B, W]``, -1 where the word has none:
    cut off by ``max_length``, or dropped by the tokenizer), which is predicted ``O`` (counted as missed, never
    dropped). Beyond a sentence's words (``word_labels`` ignored) the result is ignored too. Shape ``[B, W]``."""
    positions = word_starts.clamp(min=0)
    predicted = token_preds.gather(1, positions)
    predicted = torch.where(word_starts >= 0, predicted, torch.full_like(predicted, outside_id))
    return torch.where(word_labels != IGNORE_INDEX, predicted, torch.full_like(predicted, IGNORE_INDEX))


def sentence_counts(predicted: Tensor, gold: Tensor, tag_names: list[str], type_names: list[str]) -> Tensor:
    """``[B, K, 3]`` (true positives, predicted, gold spans per entity type) of word-level tag-id rows."""
    counts = torch.zeros(gold.shape[0], len(type_names), 3, dtype=torch.long)
    type_id = {name: k for k, name in enumerate(type_names)}
    for row in range(gold.shape[0]):
        words = gold[row] != IGNORE_INDEX
        gold_spans = entity_spans([tag_names[i] for i in gold[row][words].tolist()])
        predicted_spans = entity_spans([tag_names[i] for i in predicted[row][words].tolist()])
        for spans, column in ((gold_spans & predicted_spans, TP), (predicted_spans, PRED), (gold_spans, GOLD)):
            for kind, _, _ in spans:
                counts[row, type_id[kind], column] += 1
    return counts


class SentenceEntityCounts(Metric):
    """Per-sentence span counts; ``update(predicted, gold, groups, index)`` with word-level tag ids ``[B, W]``
    (:data:`IGNORE_INDEX` beyond a sentence's words; a row whose first word is ignored is DDP padding and skipped).
    ``compute()``: ``index`` ``[N]``, ``counts`` ``[N, K, 3]``, ``membership`` ``[N, G]``, ordered by index."""

    full_state_update = False

    def __init__(self, tag_names: list[str], type_names: list[str], num_groups: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tag_names, self.type_names, self.num_groups = list(tag_names), list(type_names), num_groups
        for name in ("index", "counts", "membership"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, predicted: Tensor, gold: Tensor, groups: Tensor, index: Tensor) -> None:
        keep = gold[:, 0] != IGNORE_INDEX
        self.index.append(index[keep].long())
        self.counts.append(sentence_counts(predicted[keep].cpu(), gold[keep].cpu(), self.tag_names,
                                           self.type_names).to(self.device))
        self.membership.append(as_membership(groups[keep], self.num_groups).long())

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.index, list) and not self.index:  # nothing seen (after a DDP sync a state is a tensor)
            return {"index": torch.zeros(0, dtype=torch.long), "counts": torch.zeros(0, len(self.type_names), 3,
                                                                                      dtype=torch.long),
                    "membership": torch.zeros(0, self.num_groups, dtype=torch.bool)}
        index = dim_zero_cat(self.index)
        order = torch.argsort(index)
        return {"index": index[order].cpu(), "counts": dim_zero_cat(self.counts)[order].cpu(),
                "membership": dim_zero_cat(self.membership)[order].bool().cpu()}


def _f1(tp: Tensor, predicted: Tensor, gold: Tensor) -> Tensor:
    """``2 tp / (predicted + gold)``, NaN where there is neither a gold nor a predicted span."""
    return torch.where(predicted + gold > 0, 2 * tp / (predicted + gold).clamp(min=1), torch.nan)


def _prf(tp: Tensor, predicted: Tensor, gold: Tensor) -> dict[str, Tensor]:
    """Precision, recall, F1 (float64, elementwise); F1 NaN where there is neither a gold nor a predicted span."""
    tp, predicted, gold = tp.double(), predicted.double(), gold.double()
    return {"precision": torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0),
            "recall": torch.where(gold > 0, tp / gold.clamp(min=1), 0.0),
            "f1": _f1(tp, predicted, gold)}


def entity_scores(counts: Tensor, membership: Tensor) -> dict[str, Tensor]:
    """Scores from per-sentence counts: overall ``precision``/``recall``/``f1`` (micro over spans), per type
    ``type_*`` and ``type_support`` ``[K]``, per group ``group_*``, ``group_sentences``, ``group_entities`` ``[G]``,
    ``worst_group_f1`` and ``group_gap`` over groups whose F1 is measured, ``macro_f1`` over types with spans."""
    totals = counts.sum(0).double()  # [K, 3]
    by_group = membership.double().T @ counts.sum(1).double()  # [G, 3]
    overall = _prf(totals[:, TP].sum(), totals[:, PRED].sum(), totals[:, GOLD].sum())
    types = _prf(totals[:, TP], totals[:, PRED], totals[:, GOLD])
    groups = _prf(by_group[:, TP], by_group[:, PRED], by_group[:, GOLD])
    measured = ~torch.isnan(groups["f1"])
    nan = torch.tensor(math.nan, dtype=torch.float64)
    worst = groups["f1"][measured].min() if measured.any() else nan
    gap = groups["f1"][measured].max() - worst if measured.any() else nan
    measured_types = ~torch.isnan(types["f1"])
    return {**overall, **{f"type_{key}": value for key, value in types.items()},
            "type_support": totals[:, GOLD].long(),
            **{f"group_{key}": value for key, value in groups.items()},
            "group_sentences": membership.sum(0), "group_entities": by_group[:, GOLD].long(),
            "worst_group_f1": worst, "group_gap": gap,
            "macro_f1": types["f1"][measured_types].mean() if measured_types.any() else nan}


def _group_f1(membership: Tensor, *parts: tuple[Tensor, Tensor]) -> Tensor:
    """F1 per group of resampled or swapped sentences: each part is ``(weights [R, N], per-sentence counts [N, 3])``
    and the parts' span counts are added before dividing -> ``[R, G]`` (NaN where a group has no span)."""
    member = membership.double()
    tp, predicted, gold = (sum(weights @ (counts[:, column, None] * member) for weights, counts in parts)
                           for column in (TP, PRED, GOLD))
    return _f1(tp, predicted, gold)


def entity_bootstrap(counts: Tensor, membership: Tensor, reference_counts: Tensor | None = None,
                     resamples: int = 1000, seed: int = 0, chunk: int = 100) -> dict:
    """Seeded percentile bootstrap over sentences: 95 % intervals of each group's F1 (``group_f1``), of the
    worst-group F1, and (paired: the same resampled sentences for both taggers) of each group's F1 delta."""
    per_sentence = counts.sum(1).double()
    reference = reference_counts.sum(1).double() if reference_counts is not None else None
    n = per_sentence.shape[0]
    generator = torch.Generator().manual_seed(seed)
    f1s, deltas = [], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = torch.randint(n, (size, n), generator=generator)
        weights = torch.zeros(size, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(size, n,
                                                                                               dtype=torch.float64))
        f1 = _group_f1(membership, (weights, per_sentence))
        f1s.append(f1)
        if reference is not None:
            deltas.append(f1 - _group_f1(membership, (weights, reference)))
    f1 = torch.cat(f1s)
    worst = torch.where(torch.isnan(f1), torch.inf, f1).amin(1).masked_fill(torch.isnan(f1).all(1), torch.nan)
    groups = range(membership.shape[1])
    result = {"group_f1": [percentile_interval(f1[:, g]) for g in groups], "worst_group_f1": percentile_interval(worst)}
    if deltas:
        stacked = torch.cat(deltas)
        result["group_delta"] = [percentile_interval(stacked[:, g]) for g in groups]
    return result


def paired_randomization_p(counts: Tensor, reference_counts: Tensor, membership: Tensor, resamples: int = 1000,
                           seed: int = 0) -> list[float]:
    """Per group, the two-sided approximate-randomization p-value of the F1 difference between two taggers on the
    same sentences: each sentence's outputs are swapped between them with probability 1/2; ``p = (1 + #{|d*| >=
    |d|}) / (1 + resamples)``. NaN where the group's F1 is not measured for either tagger."""
    model, reference = counts.sum(1).double(), reference_counts.sum(1).double()
    ones = torch.ones(1, model.shape[0], dtype=torch.float64)
    observed = (_group_f1(membership, (ones, model)) - _group_f1(membership, (ones, reference)))[0]
    swapped = (torch.rand(resamples, model.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5).double()
    kept = 1 - swapped
    differences = (_group_f1(membership, (kept, model), (swapped, reference))
                   - _group_f1(membership, (swapped, model), (kept, reference)))
    extreme = (differences.abs() >= observed.abs() - 1e-12).sum(0).double()
    p = (1 + extreme) / (1 + resamples)
    return [math.nan if math.isnan(float(d)) else float(value) for d, value in zip(observed, p)]
