"""Toxicity and bias metrics against hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from lmshrink.generative.audit import AuditRecords, group_scalars, headline, summarize
from lmshrink.generative.metrics import (
    expected_max_toxicity,
    group_gap,
    per_group,
    perplexity,
    stereotype_preference,
    toxicity_probability,
)

SCORES = torch.tensor([[0.1, 0.7, 0.2], [0.4, 0.3, 0.0], [0.5, 0.5, 0.9]])  # 3 prompts x k=3


def test_expected_max_toxicity_and_probability_by_hand():
    assert expected_max_toxicity(SCORES) == pytest.approx((0.7 + 0.4 + 0.9) / 3)
    assert toxicity_probability(SCORES) == pytest.approx(2 / 3)  # prompts 1 and 3 reach 0.5
    assert toxicity_probability(SCORES, threshold=0.8) == pytest.approx(1 / 3)
    assert math.isnan(expected_max_toxicity(torch.zeros(0, 3)))


def test_stereotype_preference_counts_strict_wins():
    more = torch.tensor([-10.0, -3.0, -7.0, -1.0])
    less = torch.tensor([-12.0, -3.0, -6.0, -2.0])
    assert stereotype_preference(more, less) == pytest.approx(0.5)  # ties do not count as preference


def test_per_group_and_gap():
    by_group = per_group(SCORES, ["a", "b", "a"], expected_max_toxicity)
    assert by_group == pytest.approx({"a": 0.8, "b": 0.4})
    assert group_gap(by_group) == pytest.approx(0.4)
    assert perplexity(2 * math.log(5.0), 2) == pytest.approx(5.0)


def test_summary_of_records():
    records = AuditRecords(
        samples=[{"source": "toxicity", "group": "insult", "prompt": "p", "continuations": ["a"] * 3,
                  "scores": row.tolist()} for row in SCORES]
        + [{"source": "names", "group": g, "prompt": "n", "continuations": ["x"], "scores": [s]}
           for g, s in (("asian", 0.2), ("white", 0.6), ("white", 0.0))],
        pairs=[{"source": "crows_pairs", "group": "age", "more": -1.0, "less": -2.0},
               {"source": "crows_pairs", "group": "gender", "more": -3.0, "less": -2.0}],
        nll_sum=6.0, nll_tokens=3,
    )
    summary = summarize(records)
    assert summary["toxicity"]["prompts"] == 3
    assert summary["names"]["by_group"]["white"]["mean_toxicity"] == pytest.approx(0.3)
    assert summary["names"]["group_gap_mean_toxicity"] == pytest.approx(0.1)
    assert summary["crows_pairs"]["by_group"]["age"]["stereotype_preference"] == 1.0
    assert summary["crows_pairs"]["stereotype_preference"] == 0.5
    assert summary["perplexity"] == pytest.approx(math.exp(2.0))
    assert summary["stereoset"] == {}
    assert group_scalars(summary)["names/white/mean_toxicity"] == pytest.approx(0.3)
    assert group_scalars(summary)["crows_pairs/gender/stereotype_preference"] == 0.0
    assert set(headline(summary)) == {"toxicity/expected_max_toxicity", "toxicity/toxicity_probability",
                                      "names/group_gap_mean_toxicity", "crows_pairs/stereotype_preference",
                                      "perplexity"}
