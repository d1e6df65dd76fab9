"""Entity F1 per group and type against seqeval (the CoNLL reference implementation), the word mapping, and the
uncertainty of F1 (bootstrap over sentences, paired approximate randomization) against hand computations."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from lmshrink.metrics.entities import (
    entity_bootstrap,
    entity_scores,
    paired_randomization_p,
    sentence_counts,
    word_predictions,
)
from lmshrink.metrics.entity_comparison import GroupEntityComparison
from lmshrink.metrics.groups import IGNORE_INDEX
from lmshrink.metrics.spans import entity_spans, entity_types

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC", "B-ORG", "I-ORG"]
TYPES = entity_types(TAGS)


def _random_sentences(count: int, seed: int, tags: list[str] = TAGS) -> list[list[str]]:
    rng = random.Random(seed)
    weights = [6] + [1] * (len(tags) - 1)
    return [rng.choices(tags, weights, k=rng.randint(1, 14)) for _ in range(count)]


def _ids(sentences: list[list[str]]) -> torch.Tensor:
    width = max(len(s) for s in sentences)
    return torch.tensor([[TAGS.index(t) for t in s] + [IGNORE_INDEX] * (width - len(s)) for s in sentences])


def _scores(gold: list[list[str]], predicted: list[list[str]], membership: torch.Tensor | None = None) -> dict:
    counts = sentence_counts(_ids(predicted), _ids(gold), TAGS, TYPES)
    membership = torch.ones(len(gold), 1, dtype=torch.bool) if membership is None else membership
    return entity_scores(counts, membership)


def test_spans_equal_seqeval_on_random_sequences_of_every_scheme():
    for sentence in _random_sentences(3000, seed=0):
        assert entity_spans(sentence) == set(get_entities(sentence)), sentence


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_micro_and_per_type_scores_equal_seqeval(seed):
    gold = _random_sentences(200, seed)
    predicted = [[t if random.Random(seed + i).random() < 0.7 else "O" for t in s] for i, s in enumerate(gold)]
    predicted = [p[:-1] + ["B-ORG"] if i % 5 == 0 else p for i, p in enumerate(predicted)]
    scores = _scores(gold, predicted)
    assert float(scores["f1"]) == pytest.approx(f1_score(gold, predicted), abs=1e-12)
    assert float(scores["precision"]) == pytest.approx(precision_score(gold, predicted), abs=1e-12)
    assert float(scores["recall"]) == pytest.approx(recall_score(gold, predicted), abs=1e-12)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for k, kind in enumerate(TYPES):
        if kind in report:
            assert float(scores["type_f1"][k]) == pytest.approx(report[kind]["f1-score"], abs=1e-12), kind
            assert int(scores["type_support"][k]) == report[kind]["support"]
    # the macro F1 over types with spans, as seqeval's macro average over the types it reports
    assert float(scores["macro_f1"]) == pytest.approx(report["macro avg"]["f1-score"], abs=1e-12)


def test_iob1_and_iob2_edge_cases_by_hand():
    # IOB1: "I-PER I-PER B-PER" is two persons (B- only separates adjacent chunks of one type)
    assert entity_spans(["I-PER", "I-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 2, 2)}
    # IOB2 read leniently (conlleval): an I- after O opens a chunk; a type change closes one
    assert entity_spans(["O", "I-LOC", "I-PER"]) == {("LOC", 1, 1), ("PER", 2, 2)}
    # a chunk that differs only at its end is a miss and a false positive (exact spans)
    scores = _scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "I-PER"]])
    assert float(scores["f1"]) == 0.0 and float(scores["precision"]) == 0.0


def test_empty_predictions_and_groups_without_entities():
    gold = [["B-PER", "O"], ["O", "O"], ["B-LOC", "I-LOC"]]
    predicted = [["O", "O"], ["O", "O"], ["O", "O"]]
    membership = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    scores = _scores(gold, predicted, membership)
    assert float(scores["f1"]) == f1_score(gold, predicted, zero_division=0) == 0.0
    assert float(scores["recall"]) == 0.0 and float(scores["precision"]) == 0.0
    # group 1 has neither a gold nor a predicted entity: not measured (seqeval would report 0), not the worst group
    assert math.isnan(float(scores["group_f1"][1]))
    assert float(scores["group_f1"][0]) == 0.0 and float(scores["worst_group_f1"]) == 0.0
    # once the group's only gold entity is found, the unmeasured group still does not count as worst
    scores = _scores(gold, [["B-PER", "O"], ["O", "O"], ["B-LOC", "I-LOC"]], membership)
    assert float(scores["worst_group_f1"]) == 1.0 and float(scores["group_gap"]) == 0.0


def test_word_predictions_read_first_sub_tokens_and_count_cut_words_as_outside():
    token_preds = torch.tensor([[0, 3, 4, 4, 1, 0, 0]])
    word_starts = torch.tensor([[1, 2, 4, -1, IGNORE_INDEX]])  # third word at position 4; fourth cut off
    word_starts[0, 4] = -1
    word_labels = torch.tensor([[3, 4, 1, 2, IGNORE_INDEX]])
    got = word_predictions(token_preds, word_starts, word_labels, outside_id=0)
    assert got.tolist() == [[3, 4, 1, 0, IGNORE_INDEX]]


def test_bootstrap_equals_a_numpy_resampling_with_the_same_draws():
    gold = _random_sentences(60, seed=3)
    predicted = [s[::-1] for s in gold]
    counts = sentence_counts(_ids(predicted), _ids(gold), TAGS, TYPES)
    membership = torch.tensor([[i % 2 == 0, True] for i in range(60)])
    intervals = entity_bootstrap(counts, membership, resamples=200, seed=7, chunk=200)
    draws = torch.randint(60, (200, 60), generator=torch.Generator().manual_seed(7)).numpy()
    per_sentence = counts.sum(1).numpy()
    f1 = []
    for row in draws:
        sums = per_sentence[row][membership.numpy()[row][:, 0]].sum(0)
        f1.append(2 * sums[0] / (sums[1] + sums[2]))
    assert intervals["group_f1"][0] == pytest.approx(tuple(np.quantile(f1, [0.025, 0.975])), abs=1e-12)


def test_randomization_p_is_one_for_identical_taggers_and_small_for_a_broken_one():
    gold = _random_sentences(120, seed=4)
    gold = [s + ["B-PER"] for s in gold]
    counts = sentence_counts(_ids(gold), _ids(gold), TAGS, TYPES)
    broken = sentence_counts(_ids([["O"] * len(s) for s in gold]), _ids(gold), TAGS, TYPES)
    membership = torch.ones(120, 1, dtype=torch.bool)
    assert paired_randomization_p(counts, counts, membership, 200) == [1.0]
    assert paired_randomization_p(broken, counts, membership, 200)[0] == pytest.approx(1 / 201)


def test_comparison_report_against_a_reference_with_holm_and_intervals():
    gold = _random_sentences(80, seed=5)
    good, bad = _ids(gold), _ids([["O"] * len(s) if i % 2 else s for i, s in enumerate(gold)])
    groups = torch.tensor([[i % 2 == 0, i % 2 == 1] for i in range(80)])
    comparison = GroupEntityComparison(["even", "odd"], TAGS, reference="teacher", resamples=300)
    starts = torch.where(good != IGNORE_INDEX, torch.arange(good.shape[1]).expand_as(good), -1)
    batch = {"word_labels": good, "word_starts": starts, "groups": groups, "index": torch.arange(80)}
    comparison.observe({"preds": bad, "reference_preds": good}, batch)
    report = comparison.report(comparison.compute(), "test")
    even, odd = report.record["groups"]
    assert even["delta_to_reference"] == 0.0 and even["p_value"] == 1.0
    assert odd["f1"] == 0.0 and odd["reference_f1"] == 1.0 and odd["delta_to_reference"] == -1.0
    assert odd["p_holm"] == pytest.approx(min(1.0, 2 * odd["p_value"])) and odd["p_holm"] < 0.05
    assert report.record["significant_groups"] == ["odd"]
    assert odd["delta_ci_low"] == odd["delta_ci_high"] == -1.0
    assert report.record["teacher"]["f1"] == 1.0
