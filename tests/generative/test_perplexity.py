"""Windowed perplexity (the pruning papers' figure) equals transformers' own LM loss per window, and the
calibration / held-out text is real, seeded and disjoint."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmshrink.backbones import load_tokenizer
from lmshrink.data.calibration_text import (CALIBRATION_FILE, HELDOUT_FILE, boolq_passages, calibration_ids, heldout_ids,
                                       token_stream)
from lmshrink.generative.perplexity import windowed_perplexity


def test_windowed_perplexity_is_exp_of_the_mean_lm_loss_over_windows(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = torch.randint(5, 2000, (3 * 20 + 7,), generator=torch.Generator().manual_seed(0))
    result = windowed_perplexity(model, ids, window=20, batch_size=2)
    assert (result["windows"], result["tokens"]) == (3, 3 * 19)  # the 7 left over make no window
    with torch.no_grad():
        losses = [float(model(input_ids=w[None], labels=w[None]).loss) for w in ids[:60].view(3, 20)]
    assert result["perplexity"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)
    assert windowed_perplexity(model, ids, window=20, max_windows=1)["nll"] == pytest.approx(losses[0], rel=1e-5)
    with pytest.raises(ValueError, match="no window"):
        windowed_perplexity(model, ids[:10], window=20)


@pytest.mark.slow
def test_calibration_windows_are_seeded_slices_of_real_text_disjoint_from_the_heldout_text():
    tokenizer = load_tokenizer("minilm")
    pool = token_stream(tokenizer, boolq_passages(CALIBRATION_FILE))
    first, again, other = (calibration_ids(tokenizer, 4, 32, seed) for seed in (0, 0, 1))
    assert first.shape == (4, 32) and torch.equal(first, again) and not torch.equal(first, other)
    for window in first:  # each window is a contiguous slice of the calibration stream
        starts = (pool[: len(pool) - 31] == window[0]).nonzero().flatten()
        assert any(torch.equal(pool[s:s + 32], window) for s in starts)
    assert not set(boolq_passages(CALIBRATION_FILE)) & set(boolq_passages(HELDOUT_FILE))
    assert len(heldout_ids(tokenizer)) > 100_000
    with pytest.raises(ValueError, match="seq_len"):
        calibration_ids(tokenizer, 4, 1, 0)
