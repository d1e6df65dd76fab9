"""The pruning sample (spec §3.4, §5.9): seeded, with replacement, fixed order, same batches every time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmshrink.data.pruning_sample import draw_sample, sample_batches, samples_for_tokens


def test_sample_size_from_tokens():
    assert samples_for_tokens(100_000, 53.24, 3668) == 1878  # MRPC in the spec's table
    assert samples_for_tokens(100_000, 20.0, 1000) == 1000  # capped by the split
    with pytest.raises(ValueError, match="num_tokens"):
        samples_for_tokens(0, 20.0, 1000)


def test_draw_is_seeded_with_replacement_and_ordered_by_length():
    lengths = np.random.default_rng(0).integers(3, 40, size=50)
    rows = draw_sample(lengths, 200, seed=3)
    assert len(rows) == 200 and len(set(rows.tolist())) < 50 + 1  # 200 draws from 50 rows: repeats
    assert np.array_equal(rows, draw_sample(lengths, 200, seed=3))
    assert not np.array_equal(rows, draw_sample(lengths, 200, seed=4))
    assert np.all(np.diff(lengths[rows]) >= 0)


def test_batches_are_identical_across_calls_and_keep_only_requested_keys():
    dataset = [{"input_ids": list(range(n)), "junk": n} for n in (3, 5, 4, 7, 2)]

    def collate(items):
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.tensor([item["input_ids"] + [0] * (width - len(item["input_ids"])) for item in items])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "junk": torch.zeros(len(items))}

    rows = np.array([4, 0, 2, 1, 3])
    first = sample_batches(dataset, rows, collate, 2, ["input_ids", "attention_mask"])
    second = sample_batches(dataset, rows, collate, 2, ["input_ids", "attention_mask"])
    assert [len(batch["input_ids"]) for batch in first] == [2, 2, 1]
    assert all(set(batch) == {"input_ids", "attention_mask"} for batch in first)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second))
