"""K-prune (Park, Choi, Kang, ICLR 2024) carried to Llama-style decoders: key/value groups and MLP channels.

The encoder algorithm (:mod:`~lmshrink.pruning.encoder.kprune`, spec §3) with the decoder units of
:mod:`~lmshrink.pruning.decoder.structure`, unchanged in its steps:

- Bottom-up over the 2L sublayers (attention_0, mlp_0, attention_1, ...). For target t, one pass over the
  calibration windows through the current student measures every still-prunable unit: *predictive knowledge*,
  the squared per-batch gradient w.r.t. the unit's gate of the KD loss between the dense model's and the
  student's next-token distributions at every non-padding position (spec §3.1's KL, ``batchmean`` over
  positions, temperature 2), and *representational knowledge*, the energy the unit's removal takes out of the
  sublayer's output (mean squared column of ``o_proj`` / ``down_proj`` times the unit's squared activations).
  A unit's score is the sum over its dimensions (the encoder's ``mu = d_h`` head weighting, for a group's r
  heads), per FLOP of the decoder FLOPs model.
- A global threshold over the units of sublayers >= t under the remaining FLOPs budget decides t's units
  (KPMS); every layer keeps at least one key/value group (the best-scoring one, charged to the budget).
- Least squares re-fits t's surviving ``o_proj`` / ``down_proj`` columns so that the student's residual stream
  after t matches the dense model's (KPWT; fp64 normal equations, the never-worse Cholesky solve). Pre-norm
  blocks have no LayerNorm after the sum: the fitted quantity is ``x + proj(a)``, read at the input of the next
  norm (``post_attention_layernorm``, the next layer's ``input_layernorm`` or the final norm).

The dense teacher runs a full forward per batch in every pass: its next-token probabilities (tokens x
vocabulary floats) and its residual stream at the target are recomputed, never kept for the whole sample, so
memory holds one batch's (keeping them would cost 3.2 GB for SmolLM2's 49,152-token vocabulary at 64 x 256
calibration tokens; recomputing costs the teacher's layers above the target, about a sixth of a pass). Masks,
then :func:`~lmshrink.pruning.decoder.structure.slice_decoder`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmshrink.distill.losses import soft_target_kl_from_probs
from lmshrink.pruning.capture import capture
from lmshrink.pruning.decoder.structure import (
    DecoderShape,
    Target,
    channel_flops,
    decoder_flops,
    decoder_masked,
    decoder_modules,
    decoder_shape,
    group_flops,
    predicting_positions,
    projection_of,
    sublayer_targets,
)
from lmshrink.pruning.settings import KPruneSettings
from lmshrink.pruning.least_squares import NormalEquations, solve_never_worse
from lmshrink.pruning.search import threshold_keep

log = logging.getLogger(__name__)

MIN_ROWS_PER_FEATURE = 4
"""KPWT re-fits a projection only when the sample has at least this many tokens per surviving input feature. With
fewer, the least squares nearly interpolate the calibration tokens and generalise badly: measured on SmolLM2 with
1,024 calibration tokens for 1,536-wide MLPs, held-out perplexity 17 -> 6e5 at keep 0.9 (encoder K-prune samples
100K tokens for 3,072 features)."""


@dataclass
class DecoderKPruneResult:
    group_mask: Tensor  # [L, G], 0/1
    channel_mask: Tensor  # [L, N], 0/1
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def teacher_next_token_probs(teacher: nn.Module, batch: dict[str, Tensor], predicting: Tensor,
                             temperature: float) -> Tensor:
    """``[positions, vocabulary]``: the teacher's softened next-token distribution at the ``predicting``
    positions (:func:`~lmshrink.pruning.decoder.structure.predicting_positions`)."""
    return F.softmax(teacher(**batch).logits[:, :-1][predicting].float() / temperature, dim=-1)


def decoder_kprune(model: nn.Module, batches: list[dict[str, Tensor]], keep_ratio: float, seq_len: float,
                   settings: KPruneSettings = KPruneSettings()) -> DecoderKPruneResult:
    """Prune ``model`` in place in the mask domain (``o_proj`` / ``down_proj`` columns re-fitted) to keep
    ``keep_ratio`` of the decoder FLOPs at ``seq_len``; ``batches``: ``input_ids`` and ``attention_mask``."""
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio={keep_ratio} must be in (0, 1]")
    if settings.faithful:
        raise ValueError("faithful=True reproduces the official encoder code; it has no decoder counterpart")
    start = time.perf_counter()
    shape = decoder_shape(model)
    model.eval().requires_grad_(False)
    teacher = copy.deepcopy(model)
    f_group, f_channel = group_flops(shape, seq_len), channel_flops(shape, seq_len)
    flops_left = keep_ratio * decoder_flops(shape, seq_len)
    group_keep = torch.ones(shape.num_layers, shape.num_groups, dtype=torch.bool)
    channel_keep = torch.ones(shape.num_layers, shape.channels, dtype=torch.bool)
    steps = []
    for target in sublayer_targets(shape.num_layers):
        layer, kind = target
        group_score, channel_score, problem = _measure(model, teacher, batches, group_keep, channel_keep, target,
                                                       shape, settings, seq_len)
        first_group_layer = layer if kind == "attention" else layer + 1
        scores = torch.cat([group_score[first_group_layer:].flatten(), channel_score[layer:].flatten()])
        num_group_candidates = group_score[first_group_layer:].numel()
        costs = torch.cat([torch.full((num_group_candidates,), f_group),
                           torch.full((channel_score[layer:].numel(),), f_channel)])
        keep = threshold_keep(scores, costs, flops_left)
        if kind == "attention":
            survivors = keep[: shape.num_groups].clone()
            if not survivors.any():  # HF attention needs one group: the best one stays, charged to the budget
                survivors[group_score[layer].argmax()] = True
            group_keep[layer] = survivors
            flops_left -= int(survivors.sum()) * f_group
        else:
            survivors = keep[num_group_candidates: num_group_candidates + shape.channels]
            channel_keep[layer] = survivors
            flops_left -= int(survivors.sum()) * f_channel
        tuning = _tune(model, target, survivors, problem, shape, settings) if settings.weight_tuning else {}
        steps.append({"layer": layer, "sublayer": kind, "kept": int(survivors.sum()), "total": survivors.numel(),
                      "budget_left": flops_left, **tuning})
        log.info("decoder K-prune %s %d: kept %d/%d, %.0f s", kind, layer, int(survivors.sum()), survivors.numel(),
                 time.perf_counter() - start)
    return DecoderKPruneResult(group_keep.float(), channel_keep.float(), steps, time.perf_counter() - start)


def _measure(model, teacher, batches, group_keep, channel_keep, target: Target, shape: DecoderShape,
             settings: KPruneSettings, seq_len: float) -> tuple[Tensor, Tensor, NormalEquations]:
    """One knowledge-measurement pass for ``target``: group scores ``[L, G]``, channel scores ``[L, N]`` (layers
    below the target's left at 0) per FLOP, and the target's normal equations."""
    layer = target[0]
    dims = shape.group_size * shape.head_dim
    pred_group = torch.zeros(shape.num_layers, shape.num_groups)
    pred_channel = torch.zeros(shape.num_layers, shape.channels)
    rep_dims = torch.zeros(shape.num_layers, shape.num_groups * dims)
    rep_channel = torch.zeros(shape.num_layers, shape.channels)
    stream = torch.zeros(shape.num_layers, 2)  # energy of the residual stream after each sublayer
    problem, positions, tokens = NormalEquations(), 0, 0
    scored = [t for t in sublayer_targets(shape.num_layers) if t >= target]
    for batch in batches:
        mask = batch["attention_mask"].bool()
        predicting = predicting_positions(mask)
        with capture(teacher, [target], modules=decoder_modules) as teacher_store:
            batch_probs = teacher_next_token_probs(teacher, batch, predicting, settings.temperature)
        group_leaf = group_keep[layer:].float().requires_grad_(True)
        channel_leaf = channel_keep[layer:].float().requires_grad_(True)
        groups = torch.cat([group_keep[:layer].float(), group_leaf])
        channels = torch.cat([channel_keep[:layer].float(), channel_leaf])
        with decoder_masked(model, groups, channels), capture(model, scored, modules=decoder_modules) as store:
            logits = model(**batch).logits[:, :-1][predicting]
            loss = soft_target_kl_from_probs(logits, batch_probs, settings.temperature)
            group_grad, channel_grad = torch.autograd.grad(loss, [group_leaf, channel_leaf])
        pred_group[layer:] += 0.5 * group_grad.pow(2).cpu()
        pred_channel[layer:] += 0.5 * channel_grad.pow(2).cpu()
        for (sub_layer, kind), record in store.items():
            energy = record["a"].detach()[mask].pow(2).sum(0).cpu()
            (rep_dims if kind == "attention" else rep_channel)[sub_layer] += energy
            stream[sub_layer, kind == "mlp"] += float(record["z"].detach()[mask].pow(2).sum())
        positions += int(predicting.sum())
        tokens += int(mask.sum())
        record = store[target]
        features = record["a"].detach()[mask]
        residual = (record["z"] - record["proj"]).detach()[mask]
        problem.add(features, teacher_store[target]["z"][mask] - residual)
    column_energy_dims = torch.stack([projection_of(model, (l, "attention")).weight.detach().pow(2).mean(0).cpu()
                                      for l in range(shape.num_layers)])
    column_energy_channels = torch.stack([projection_of(model, (l, "mlp")).weight.detach().pow(2).mean(0).cpu()
                                          for l in range(shape.num_layers)])
    # Predictive scores are per gate (a group's gate covers its r heads' dimensions); representational ones per
    # dimension, summed over the group's dimensions (the encoder's mu = d_h weighting of a head's mean).
    # Pre-norm blocks add to a residual stream whose scale grows with depth; an encoder's post-LN sum is
    # renormalised at every sublayer. Representational knowledge is therefore taken relative to the stream's
    # energy after the sublayer (per token, summed over d), so that units of different layers compare as in K-prune.
    scale = (stream / max(tokens, 1)).clamp(min=torch.finfo(torch.float32).tiny)
    rep_group = (rep_dims * column_energy_dims).view(shape.num_layers, shape.num_groups, dims).sum(-1) / tokens
    rep_group = rep_group / scale[:, :1]
    rep_channels = rep_channel * column_energy_channels / tokens / scale[:, 1:]
    group = settings.lam_pred * pred_group / max(positions, 1) + settings.lam_rep * rep_group
    channel = settings.lam_pred * pred_channel / max(positions, 1) + settings.lam_rep * rep_channels
    return group / group_flops(shape, seq_len), channel / channel_flops(shape, seq_len), problem


def _tune(model: nn.Module, target: Target, survivors: Tensor, problem: NormalEquations, shape: DecoderShape,
          settings: KPruneSettings) -> dict:
    """KPWT: re-fit the surviving columns of the target's output projection."""
    projection = projection_of(model, target)
    columns = survivors.repeat_interleave(shape.group_size * shape.head_dim) if target[1] == "attention" else survivors
    index = columns.nonzero().flatten()
    if len(index) == 0:
        return {"skipped": "no unit survives"}
    if problem.rows < MIN_ROWS_PER_FEATURE * len(index):
        return {"skipped": f"{problem.rows} calibration tokens for {len(index)} features (< {MIN_ROWS_PER_FEATURE} "
                           f"per feature): not re-fitted"}
    current = projection.weight.detach()[:, index.to(projection.weight.device)].T.cpu()
    solution = solve_never_worse(problem.restricted(index), current, settings.ridge)
    with torch.no_grad():
        projection.weight[:, index.to(projection.weight.device)] = solution.weight.T.to(projection.weight)
    return {"error_before": solution.error_before, "error_after": solution.error_after, "accepted": solution.accepted}
