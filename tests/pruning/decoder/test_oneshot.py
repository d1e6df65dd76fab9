"""Wanda, SparseGPT and magnitude one-shot pruning of decoder Linears: hand-derived values from the papers'
formulas, the official SparseGPT code as an oracle, exact sparsity patterns, reconstruction error ordering, and
the block-by-block streaming on a tiny random Llama."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmshrink.pruning.decoder.blocks import block_linears, decoder_blocks
from lmshrink.pruning.decoder.oneshot import magnitude_prune, prune_decoder, wanda_prune
from lmshrink.pruning.methods import SparseGPT, Wanda, from_short_name
from lmshrink.pruning.decoder.sparsegpt import Hessian, sparsegpt_prune
from lmshrink.pruning.sparsity_masks import lowest, n_m_mask, parse_n_m, row_mask
from lmshrink.pruning.decoder.wanda import InputNorms
from tests.pruning.official_sparsegpt import official_fasterprune


def correlated_inputs(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """Inputs with unequal feature scales and correlations (LLM activations have outlier features)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator) / features ** 0.5
    scales = torch.exp(torch.randn(features, generator=generator))
    return (torch.randn(tokens, features, generator=generator) @ mixing + 0.3 * torch.randn(tokens, features,
                                                                                               generator=generator)) * scales


def test_wanda_matches_a_hand_worked_example():
    """|W| * ||X_j||: feature 1 has norm 10, so its small weight outranks a larger weight of feature 0 (norm 1)."""
    weight = torch.tensor([[4.0, 0.5, -3.0, 1.2], [1.0, -1.5, 2.0, 0.1]])
    inputs = torch.tensor([[1.0, 6.0, 0.0, 2.0], [0.0, 8.0, 1.0, 0.0]])  # norms: 1, 10, 1, 2
    norms = InputNorms(4)
    norms.add(inputs)
    assert norms.squared.tolist() == [1.0, 100.0, 1.0, 4.0]
    pruned = wanda_prune(weight, norms, 0.5, None)
    # row 0 scores 4, 5, 3, 2.4 -> prune 3 and 2.4; row 1 scores 1, 15, 2, 0.2 -> prune 0.2 and 1
    assert pruned.tolist() == [[4.0, 0.5, 0.0, 0.0], [0.0, -1.5, 2.0, 0.0]]
    # magnitude over the whole layer: the 4 smallest |w| are 0.1, 0.5, 1.0, 1.2
    assert magnitude_prune(weight, 0.5, None).tolist() == [[4.0, 0.0, -3.0, 0.0], [0.0, -1.5, 2.0, 0.0]]


def test_sparsegpt_matches_the_obs_update_derived_by_hand():
    """Two inputs, prune column 0 (1 of 2 weights): the optimal compensation of the other weight is
    delta_1 = w_0 * H_01 / H_11 (minimise delta^T H delta with delta_0 = -w_0); no damping."""
    hessian = torch.tensor([[2.0, 0.6], [0.6, 1.0]])
    weight = torch.tensor([[0.5, 3.0]])
    # w^2 / [H^-1]_jj^2 ranks column 0 lowest: [H^-1] = 1/1.64 [[1, -0.6], [-0.6, 2]]
    pruned = sparsegpt_prune(weight, hessian, sparsity=0.5, percdamp=0.0)
    assert pruned[0, 0] == 0
    assert pruned[0, 1].item() == pytest.approx(3.0 + 0.5 * 0.6 / 1.0, rel=1e-5)
    assert sparsegpt_prune(weight, torch.eye(2), sparsity=0.5, percdamp=0.0).tolist() == [[0.0, 3.0]]  # H=I: magnitude


@pytest.mark.parametrize("n_m", [(2, 4), (4, 8)])
def test_sparsegpt_n_m_equals_the_official_code(n_m):
    torch.manual_seed(0)
    weight = torch.randn(48, 64)
    hessian = Hessian(64)
    hessian.add(correlated_inputs(300, 64))
    ours = sparsegpt_prune(weight, hessian.matrix, n_m=n_m, blocksize=32)
    official = official_fasterprune(weight, hessian.matrix, 0, prune_n=n_m[1] - n_m[0], prune_m=n_m[1], blocksize=32)
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-5)


def test_sparsegpt_unstructured_differs_from_the_official_code_only_by_its_extra_weight_per_block():
    """The official threshold ``tmp <= sorted[int(numel * s)]`` prunes one weight more per column block than the
    sparsity asks; lmshrink prunes exactly ``int(numel * s)``."""
    torch.manual_seed(1)
    weight = torch.randn(16, 96)
    hessian = Hessian(96)
    hessian.add(correlated_inputs(400, 96, seed=1))
    ours = sparsegpt_prune(weight, hessian.matrix, sparsity=0.5, blocksize=32)
    official = official_fasterprune(weight, hessian.matrix, 0.5, blocksize=32)
    for start in range(0, 96, 32):
        assert int((ours[:, start:start + 32] == 0).sum()) == 16 * 32 // 2
        assert int((official[:, start:start + 32] == 0).sum()) == 16 * 32 // 2 + 1
    assert ((ours == 0) & (official != 0)).sum() == 0  # every weight lmshrink prunes, the official prunes too


def test_masks_prune_exactly_the_asked_share_per_row_and_per_group():
    scores = torch.rand(7, 24)
    mask = row_mask(scores, 0.4)
    assert (mask.sum(dim=1) == int(24 * 0.4)).all()
    assert (scores[mask].max() <= scores[~mask].max())
    for n, m in ((2, 4), (4, 8), (1, 4)):
        groups = n_m_mask(scores, n, m).reshape(7, 24 // m, m)
        assert (groups.sum(dim=2) == m - n).all()
    assert parse_n_m("2:4") == (2, 4)
    for bad in ("4:2", "2-4", "0:4"):
        with pytest.raises(ValueError):
            parse_n_m(bad)


@pytest.mark.parametrize("values", ["distinct", "ties", "nan"])
def test_lowest_is_the_start_of_a_stable_sort(values):
    """The masks' selection equals the official codes' ``sort(stable=True)[:count]``: ties go to the earlier
    column, NaN counts highest; per row and over a flat block."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 40, generator=generator) if values != "ties" else \
        torch.randint(0, 4, (6, 40), generator=generator).float()
    if values == "nan":
        scores[:, ::3] = float("nan")
    for tensor in (scores, scores.flatten()):
        for count in (0, 1, 13, 20, 35, tensor.shape[-1]):
            order = torch.sort(tensor, dim=-1, stable=True).indices[..., :count]
            expected = torch.zeros_like(tensor, dtype=torch.bool).scatter_(-1, order, True)
            assert torch.equal(lowest(tensor, count), expected), (values, tensor.shape, count)


def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude():
    """On the same calibration batch, ||W X - W' X||^2 of one Linear: SparseGPT (which also updates the kept
    weights) < Wanda (which weighs by input norms) < magnitude, unstructured 50 % and 2:4."""
    torch.manual_seed(2)
    weight = torch.randn(64, 128)
    inputs = correlated_inputs(1024, 128, seed=2)
    norms, hessian = InputNorms(128), Hessian(128)
    norms.add(inputs)
    hessian.add(inputs)
    error = lambda pruned: float(((inputs @ (weight - pruned).T) ** 2).sum())
    for sparsity, n_m in ((0.5, None), (None, (2, 4))):
        magnitude = error(magnitude_prune(weight, sparsity, n_m))
        wanda = error(wanda_prune(weight, norms, sparsity, n_m))
        sparsegpt = error(sparsegpt_prune(weight, hessian.matrix, sparsity, n_m))
        assert sparsegpt < wanda < magnitude, (sparsity, n_m, sparsegpt, wanda, magnitude)


@pytest.fixture()
def tiny_llama(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def calibration(seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 1000, (6, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_prune_decoder_reaches_the_pattern_in_every_linear_and_logs_one_line_per_block(tiny_llama, method):
    lines, dense = [], copy.deepcopy(tiny_llama)
    record = prune_decoder(tiny_llama, calibration(), from_short_name(f"{method}-0.5"), batch_size=4,
                           log=lines.append)
    assert len(lines) == len(decoder_blocks(tiny_llama)) and lines[0].startswith(f"[lmshrink] {method} block 1/2")
    assert record["sparsity_reached"] == pytest.approx(0.5, abs=0.01)
    for block in decoder_blocks(tiny_llama):
        for linear in block_linears(block).values():
            zeros = linear.weight == 0
            if method == "wanda":  # compared per output row
                assert (zeros.sum(dim=1) == linear.in_features // 2).all()
            else:
                assert int(zeros.sum()) == pytest.approx(linear.weight.numel() / 2, abs=8)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):  # outside the blocks: dense
        assert torch.equal(tiny_llama.state_dict()[name], dense.state_dict()[name])


def test_prune_decoder_n_m_holds_in_every_group(tiny_llama):
    prune_decoder(tiny_llama, calibration(), SparseGPT(n_m="2:4", blocksize=16), batch_size=6, log=lambda _: None)
    for block in decoder_blocks(tiny_llama):
        for linear in block_linears(block).values():
            groups = (linear.weight != 0).reshape(linear.out_features, -1, 4)
            assert (groups.sum(dim=2) <= 2).all()


def block_input_norms(model, ids: torch.Tensor, index: int) -> dict[str, InputNorms]:
    """||X_j||^2 of every Linear of block ``index`` over one forward of ``model`` on ``ids``."""
    linears = block_linears(decoder_blocks(model)[index])
    norms = {name: InputNorms(linear.in_features) for name, linear in linears.items()}
    handles = [linear.register_forward_hook(lambda module, args, output, s=norms[name]: s.add(args[0]))
               for name, linear in linears.items()]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for handle in handles:
        handle.remove()
    return norms


def test_each_block_is_calibrated_on_the_pruned_blocks_below_it(tiny_llama):
    """Wanda's mask of block 1 equals the one computed by hand from the inputs block 1's Linears receive when
    block 0 is pruned and block 1 is not yet (one pass through the unpruned block, as the official code)."""
    dense = copy.deepcopy(tiny_llama)
    ids = calibration(3)
    prune_decoder(tiny_llama, ids, Wanda(sparsity=0.5), batch_size=2, log=lambda _: None)
    hybrid = copy.deepcopy(dense)
    decoder_blocks(hybrid)[0].load_state_dict(decoder_blocks(tiny_llama)[0].state_dict())
    streamed, unpruned = block_input_norms(hybrid, ids, 1), block_input_norms(dense, ids, 1)
    pruned = block_linears(decoder_blocks(tiny_llama)[1])
    for name, linear in block_linears(decoder_blocks(dense)[1]).items():
        assert torch.equal(pruned[name].weight == 0, wanda_prune(linear.weight, streamed[name], 0.5, None) == 0), name
    # the dense model's own block-1 statistics would give another mask: the streaming matters
    assert any(not torch.equal(pruned[name].weight == 0, wanda_prune(linear.weight, unpruned[name], 0.5, None) == 0)
               for name, linear in block_linears(decoder_blocks(dense)[1]).items())
