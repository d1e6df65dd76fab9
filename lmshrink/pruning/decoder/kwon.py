"""Kwon et al. (NeurIPS 2022) carried to Llama-style decoders: key/value groups and MLP channels.

The encoder algorithm (:mod:`~lmshrink.pruning.encoder.kwon`, spec §2, corrected mode) with the decoder units of
:mod:`~lmshrink.pruning.decoder.structure`; the weights never change, the result is real-valued masks that
:func:`~lmshrink.pruning.decoder.structure.slice_decoder` folds into ``o_proj`` / ``down_proj``:

- Fisher importance: gradients w.r.t. all-ones group ``[L, G]`` and channel ``[L, N]`` gates of the model's own
  next-token cross-entropy on the calibration text (a language model's labels are its text, so no task labels
  are needed), one gradient per calibration *sequence*: the rows of the empirical Fisher. (The encoder takes one
  per batch of a 2,048-example sample; a CPU-sized decoder sample has a handful of batches, too few rows for the
  block-diagonal rearrangement.) Importance is the sum of squared gradients.
- Search: every layer keeps its most important group first (HF attention cannot run with none), charged to the
  budget; the rest of the budget goes to the exact group/channel split of :func:`~lmshrink.pruning.search.
  kwon_search` (all groups cost the same, all channels cost the same).
- Rearrangement: per layer, groups and channels separately, with the block-diagonal Fisher (:func:`~lmshrink.
  pruning.kwon.rearrange`); the number kept per layer does not change.
- Mask tuning, bottom-up over attention_0, mlp_0, ...: least squares on the kept units' scales, ridge towards one
  (LSMR with damping 1), so that the residual stream after the sublayer (the input of the next norm, as in
  :mod:`~lmshrink.pruning.decoder.kprune`) matches the teacher's, the teacher being the search-only mask at the
  looser ratio ``sqrt(keep)``; tuning stops at the first scale outside [-10, 10] (the official abort rule).

Cost: one forward and backward per calibration sequence, then for the tuning each block run once for the
teacher and three times for the student, streamed block by block as the official code does (SmolLM2, 8 x 128
tokens, 2 AMX cores: 16 s, against 73 s when each sublayer took two forwards from the embeddings, same masks):
far cheaper than K-prune's full pass per sublayer, so it affords a larger sample on a CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmshrink.pruning.decoder.blocks import BlockInputs, batch_block_inputs, decoder_blocks
from lmshrink.pruning.decoder.structure import (
    DecoderShape,
    Target,
    channel_flops,
    decoder_flops,
    decoder_masked,
    decoder_shape,
    group_flops,
    predicting_positions,
    projection_of,
)
from lmshrink.pruning.settings import SCALE_LIMIT, KwonSettings
from lmshrink.pruning.least_squares import ridge_towards_one, scale_normal_equations
from lmshrink.pruning.search import kwon_search, rearrange

log = logging.getLogger(__name__)


@dataclass
class DecoderKwonResult:
    group_mask: Tensor  # [L, G], real-valued after tuning
    channel_mask: Tensor  # [L, N]
    group_importance: Tensor  # [L, G]
    channel_importance: Tensor  # [L, N]
    tuned: list[Target]
    stopped_at: Target | None
    seconds: float


def sequences(batches: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """The batches split into one-sequence batches (the Fisher's rows)."""
    return [{key: value[index:index + 1] for key, value in batch.items()}
            for batch in batches for index in range(len(batch["input_ids"]))]


def fisher_gradients(model: nn.Module, batches: Sequence[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """``[S, L, G]`` and ``[S, L, N]``: per calibration sequence, the gradient of the next-token cross-entropy
    (HF's mean loss with ``labels=input_ids``, over the positions where neither the token nor its predecessor is
    padding) w.r.t. all-ones group and channel gates."""
    shape = decoder_shape(model)
    model.eval().requires_grad_(False)
    group_grads, channel_grads = [], []
    for sequence in sequences(batches):
        scored = predicting_positions(sequence["attention_mask"])  # label j + 1 is predicted at position j
        if not scored.any():  # nothing to predict (all padding): no gradient, not a Fisher row
            continue
        ids = sequence["input_ids"]
        labels = torch.cat([torch.full_like(ids[:, :1], -100), ids[:, 1:].masked_fill(~scored, -100)], dim=1)
        groups = torch.ones(shape.num_layers, shape.num_groups, requires_grad=True)
        channels = torch.ones(shape.num_layers, shape.channels, requires_grad=True)
        with decoder_masked(model, groups, channels):
            loss = model(**sequence, labels=labels, use_cache=False).loss
        group_grad, channel_grad = torch.autograd.grad(loss, [groups, channels])
        group_grads.append(group_grad)
        channel_grads.append(channel_grad)
    return torch.stack(group_grads), torch.stack(channel_grads)


def decoder_kwon_search(group_importance: Tensor, channel_importance: Tensor, budget: float, group_cost: float,
                        channel_cost: float) -> tuple[Tensor, Tensor]:
    """Keep-masks ``[L, G]``, ``[L, N]`` within ``budget`` FLOPs, each layer's most important group kept first."""
    forced = torch.zeros_like(group_importance, dtype=torch.bool)
    forced[torch.arange(len(forced)), group_importance.argmax(1)] = True
    rest_budget = max(budget - len(forced) * group_cost, 0.0)
    rest_keep, channel_keep = kwon_search(group_importance[~forced], channel_importance, rest_budget, group_cost,
                                          channel_cost)
    group_keep = forced.clone()
    group_keep[~forced] = rest_keep
    return group_keep, channel_keep


def decoder_kwon(model: nn.Module, batches: Sequence[dict[str, Tensor]], keep_ratio: float, seq_len: float,
                 settings: KwonSettings = KwonSettings()) -> DecoderKwonResult:
    """Masks for ``model`` keeping ``keep_ratio`` of the decoder FLOPs at ``seq_len`` (weights unchanged);
    ``batches``: ``input_ids`` and ``attention_mask``."""
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio={keep_ratio} must be in (0, 1]")
    if settings.faithful:
        raise ValueError("faithful=True reproduces the official encoder code; it has no decoder counterpart")
    start = time.perf_counter()
    shape = decoder_shape(model)
    group_grads, channel_grads = fisher_gradients(model, batches)
    group_importance, channel_importance = group_grads.pow(2).sum(0), channel_grads.pow(2).sum(0)
    f_group, f_channel = group_flops(shape, seq_len), channel_flops(shape, seq_len)
    full = decoder_flops(shape, seq_len)

    def search(ratio: float) -> tuple[Tensor, Tensor]:
        return decoder_kwon_search(group_importance, channel_importance, ratio * full, f_group, f_channel)

    log.info("decoder Kwon: Fisher importance from %d sequences, %.0f s", len(group_grads),
             time.perf_counter() - start)
    group_keep, channel_keep = search(keep_ratio)
    if settings.rearrange:
        for layer in range(shape.num_layers):
            group_keep[layer] = rearrange(group_grads[:, layer], group_keep[layer])
            channel_keep[layer] = rearrange(channel_grads[:, layer], channel_keep[layer])
    group_mask, channel_mask = group_keep.float(), channel_keep.float()
    tuned, stopped = [], None
    if settings.mask_tuning and keep_ratio < 1:
        teacher_masks = tuple(keep.float() for keep in search(math.sqrt(keep_ratio)))
        tuned, stopped = tune_decoder_masks(model, batches, teacher_masks, group_mask, channel_mask, shape)
    return DecoderKwonResult(group_mask, channel_mask, group_importance, channel_importance, tuned, stopped,
                             time.perf_counter() - start)


def tune_decoder_masks(model: nn.Module, batches: Sequence[dict[str, Tensor]], teacher_masks: tuple[Tensor, Tensor],
                       group_mask: Tensor, channel_mask: Tensor, shape: DecoderShape
                       ) -> tuple[list[Target], Target | None]:
    """Rescale the kept units of ``group_mask`` / ``channel_mask`` in place, sublayer by sublayer. Returns the
    sublayers tuned and the one where the abort rule stopped tuning (``None`` if it never fired).

    The teacher's and the student's hidden states are streamed block by block, as the official code collects
    each layer's inputs from the previous layer's (``collect_layer_inputs``): each block runs once for the teacher
    and three times for the student (read attention, read the MLP after attention is tuned, pass the tuned block's
    output on), instead of two forwards from the embeddings per sublayer. The inputs of every sublayer, and so
    the scales, are the same as those forwards'."""
    teacher = batch_block_inputs(model, batches)
    student = BlockInputs(list(teacher.hidden), teacher.kwargs)
    rows = [batch["attention_mask"].bool() for batch in batches]
    tuned = []
    for layer, block in enumerate(decoder_blocks(model)):
        with decoder_masked(model, *teacher_masks):
            targets, teacher.hidden = block_sums(block, teacher)
        for kind in ("attention", "mlp"):
            target, mask = (layer, kind), group_mask if kind == "attention" else channel_mask
            kept = mask[layer].nonzero().flatten()
            if len(kept) == 0:
                continue
            with decoder_masked(model, group_mask, channel_mask):  # the student's masks as tuned so far
                records, _ = block_records(block, student)
            weight = projection_of(model, target).weight.detach()
            unit_dim = shape.group_size * shape.head_dim if kind == "attention" else 1
            gram = cross = 0
            for chunk, record, wanted in zip(rows, records, targets):
                a, proj, z = record[kind]
                residual = (z - proj)[chunk]
                batch_gram, batch_cross = scale_normal_equations(a[chunk], weight, kept, unit_dim,
                                                                 wanted[kind][chunk].double() - residual.double())
                gram, cross = gram + batch_gram, cross + batch_cross
            scales = ridge_towards_one(gram, cross)
            if not torch.isfinite(scales).all() or scales.abs().max() > SCALE_LIMIT:
                return tuned, target
            mask[layer, kept] *= scales.to(mask)
            tuned.append(target)
            log.info("decoder Kwon: tuned %s %d (%d units)", kind, layer, len(kept))
        with decoder_masked(model, group_mask, channel_mask):
            _, student.hidden = block_records(block, student)
    return tuned, None


@torch.no_grad()
def block_records(block: nn.Module, inputs: BlockInputs) -> tuple[list[dict[str, tuple[Tensor, Tensor, Tensor]]],
                                                                   list[Tensor]]:
    """Per chunk, ``{"attention" | "mlp": (input of the output projection after its mask, its output, the residual
    stream after the sublayer)}``, and the block's outputs (the next block's inputs)."""
    attention, mlp = block.self_attn.o_proj, block.mlp.down_proj
    seen: dict[str, Tensor] = {}

    def read(name):
        def hook(module, args, output):
            seen[f"{name}_in"], seen[f"{name}_out"] = args[0], output
        return hook

    def read_sum(module, args):
        seen["attention_sum"] = args[0]

    handles = [attention.register_forward_hook(read("attention")), mlp.register_forward_hook(read("mlp")),
               block.post_attention_layernorm.register_forward_pre_hook(read_sum)]
    records, outputs = [], []
    try:
        for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
            output = block(hidden, **kwargs)
            output = output[0] if isinstance(output, tuple) else output
            records.append({"attention": (seen["attention_in"], seen["attention_out"], seen["attention_sum"]),
                            "mlp": (seen["mlp_in"], seen["mlp_out"], output)})
            outputs.append(output)
    finally:
        for handle in handles:
            handle.remove()
    return records, outputs


def block_sums(block: nn.Module, inputs: BlockInputs) -> tuple[list[dict[str, Tensor]], list[Tensor]]:
    """Per chunk, the residual stream after the block's attention and after its MLP; and the block's outputs."""
    records, outputs = block_records(block, inputs)
    return [{kind: record[kind][2] for kind in record} for record in records], outputs
