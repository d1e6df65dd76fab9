"""Kwon et al. (NeurIPS 2022), "A Fast Post-Training Pruning Framework for Transformers": the baseline.

Spec §2: Fisher importance of head and neuron masks from per-batch gradients of the task loss (labels needed),
the exact head/neuron split under the FLOPs budget, per-layer mask rearrangement with the block-diagonal
Fisher, and mask tuning: layer by layer, least squares on the kept units' mask values so that each sublayer's
pre-LN output matches a teacher's. Weights never change; the result is real-valued masks, folded into the
output projections by :func:`~lmshrink.pruning.encoder.slicing.slice_encoder`.

Corrected mode (default) vs ``faithful=True`` (official code):

- the teacher is the search-only mask at the looser ratio sqrt(c) in both modes (as the code does);
- corrected tunes layer 0's MHA too, uses no constant "ones" column, and computes the teacher's FFN target
  with the teacher's own neuron mask; faithful skips layer-0 MHA, adds and discards the ones column, and
  reads the teacher FFN from unmasked activations;
- both solve LSMR-with-damping-1 in closed form (fp64) and stop tuning this and all later layers when a scale
  leaves [-10, 10] (the code's abort rule); a layer with a single unit works (it crashes the official helper).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmshrink.pruning.encoder.arch import EncoderShape, shape_of, sublayer_modules
from lmshrink.pruning.capture import Sublayer, capture, run_until_stop
from lmshrink.pruning.flops import FlopsBudget, encoder_flops, head_flops, neuron_flops
from lmshrink.pruning.least_squares import ridge_towards_one, scale_normal_equations
from lmshrink.pruning.score_precision import ScorePrecision, scoring
from lmshrink.pruning.encoder.gates import masked
from lmshrink.pruning.encoder.layer_inputs import next_layer_inputs, start_at
from lmshrink.pruning.search import kwon_search, rearrange
from lmshrink.pruning.settings import SCALE_LIMIT, KwonSettings

log = logging.getLogger(__name__)

@dataclass
class KwonResult:
    head_mask: Tensor  # [L, H], real-valued after tuning
    neuron_mask: Tensor  # [L, N]
    head_importance: Tensor
    neuron_importance: Tensor
    tuned_sublayers: list[Sublayer]
    stopped_at: Sublayer | None
    seconds: float


def fisher_gradients(model: nn.Module, batches: Sequence[dict[str, Tensor]], score_precision: ScorePrecision = "32"
                     ) -> tuple[Tensor, Tensor]:
    """Per-batch gradients of the model's own loss (true labels) w.r.t. all-ones head ``[L, H]`` and neuron
    ``[L, N]`` masks: ``[B, L, H]`` and ``[B, L, N]`` (spec §2.1), the passes in ``score_precision``
    (:mod:`~lmshrink.pruning.score_precision`). Batches carry ``labels``."""
    shape = shape_of(model)
    model.eval().requires_grad_(False)
    head_grads, neuron_grads = [], []
    for batch in batches:
        if "labels" not in batch:
            raise ValueError("Kwon et al.'s Fisher importance needs labels in the sample batches")
        heads = torch.ones(shape.num_layers, shape.num_heads, requires_grad=True)
        neurons = torch.ones(shape.num_layers, shape.ffn, requires_grad=True)
        with masked(model, heads, neurons), scoring(score_precision, batch["labels"].device):
            loss = model(**batch).loss.float()
        head_grad, neuron_grad = torch.autograd.grad(loss, [heads, neurons])
        head_grads.append(head_grad.cpu())
        neuron_grads.append(neuron_grad.cpu())
    return torch.stack(head_grads), torch.stack(neuron_grads)


def block_objective(gradients: Tensor, keep: Tensor) -> float:
    """``||sum_{u pruned} G[:, u]||^2``, the block-diagonal loss estimate rearrangement minimises."""
    return float(gradients.double()[:, ~keep].sum(1).pow(2).sum())


def kwon(model: nn.Module, batches: Sequence[dict[str, Tensor]], budget: FlopsBudget,
         settings: KwonSettings = KwonSettings(), score_precision: ScorePrecision = "32") -> KwonResult:
    """Masks for ``model`` at ``budget`` (the model's weights are not changed). ``score_precision``: the Fisher
    passes' precision; mask tuning's captures are float32 forwards and its solves fp64 either way."""
    start = time.perf_counter()
    shape = shape_of(model)
    head_grads, neuron_grads = fisher_gradients(model, batches, score_precision)
    head_importance, neuron_importance = head_grads.pow(2).sum(0), neuron_grads.pow(2).sum(0)
    f_head = head_flops(budget.seq_len, shape.hidden, shape.head_dim)
    f_neuron = neuron_flops(budget.seq_len, shape.hidden)
    full = encoder_flops(shape, budget.seq_len)

    def search(ratio: float) -> tuple[Tensor, Tensor]:
        return kwon_search(head_importance, neuron_importance, ratio * full, f_head, f_neuron, settings.faithful)

    log.info("Kwon: Fisher importance from %d batches, %.0f s", len(batches), time.perf_counter() - start)
    head_keep, neuron_keep = search(budget.keep_ratio)
    if settings.rearrange:
        for layer in range(shape.num_layers):
            head_keep[layer] = rearrange(head_grads[:, layer], head_keep[layer])
            neuron_keep[layer] = rearrange(neuron_grads[:, layer], neuron_keep[layer])
    head_mask, neuron_mask = head_keep.float(), neuron_keep.float()
    tuned, stopped = [], None
    if settings.mask_tuning and budget.keep_ratio < 1:
        teacher_heads, teacher_neurons = (keep.float() for keep in search(math.sqrt(budget.keep_ratio)))
        tuned, stopped = tune_masks(model, batches, (teacher_heads, teacher_neurons), head_mask, neuron_mask,
                                    shape, settings.faithful)
    return KwonResult(head_mask, neuron_mask, head_importance, neuron_importance, tuned, stopped,
                      time.perf_counter() - start)


def tune_masks(model: nn.Module, batches: Sequence[dict[str, Tensor]], teacher_masks: tuple[Tensor, Tensor],
               head_mask: Tensor, neuron_mask: Tensor, shape: EncoderShape, faithful: bool
               ) -> tuple[list[Sublayer], Sublayer | None]:
    """Layer-wise mask tuning (spec §2.4); rescales ``head_mask``/``neuron_mask`` in place. Returns the
    sublayers tuned and the one where the abort rule stopped tuning (``None`` if it never fired).

    The hidden states entering each layer are kept, for the teacher and for the student, and every pass starts
    there (:func:`~lmshrink.pruning.encoder.layer_inputs.start_at`), as the official code collects each layer's
    inputs from the previous layer's outputs: once a layer is tuned nothing below it changes, so the passes from
    the embeddings computed the same inputs again for every sublayer (quadratic in depth)."""
    tuned = []
    teacher_hidden = student_hidden = None  # None: layer 0's inputs, from the embeddings
    for layer in range(shape.num_layers):
        for kind in ("mha", "ffn"):
            sublayer: Sublayer = (layer, kind)
            mask = head_mask if kind == "mha" else neuron_mask
            kept = mask[layer].nonzero().flatten()
            if len(kept) == 0 or (faithful and sublayer == (0, "mha")):
                continue
            last_layer_cls_only = kind == "ffn" and layer == shape.num_layers - 1
            gram, cross = _mask_normal_equations(model, batches, teacher_masks, head_mask, neuron_mask, sublayer,
                                                 kept, shape, faithful, last_layer_cls_only,
                                                 (teacher_hidden, student_hidden))
            scales = ridge_towards_one(gram, cross)
            if faithful and kind == "mha":
                scales = scales[:-1]  # the constant "ones" column's coefficient is discarded
            if not torch.isfinite(scales).all() or scales.abs().max() > SCALE_LIMIT:
                return tuned, sublayer
            mask[layer, kept] *= scales.to(device=mask.device, dtype=mask.dtype)
            tuned.append(sublayer)
            log.info("Kwon: tuned %s %d (%d units)", kind.upper(), layer, len(kept))
        if layer + 1 < shape.num_layers:
            with masked(model, *teacher_masks):
                teacher_hidden = next_layer_inputs(model, batches, layer, teacher_hidden)
            with masked(model, head_mask, neuron_mask):
                student_hidden = next_layer_inputs(model, batches, layer, student_hidden)
    return tuned, None


def _mask_normal_equations(model, batches, teacher_masks, head_mask, neuron_mask, sublayer: Sublayer, kept: Tensor,
                           shape: EncoderShape, faithful: bool, cls_only: bool,
                           layer_inputs: tuple[list[Tensor] | None, list[Tensor] | None]) -> tuple[Tensor, Tensor]:
    """``A^T A`` and ``A^T B`` over the kept units' scales: column i of A is unit i's contribution to the
    output projection, B the teacher's pre-LN output minus the projection bias and the student's residual.
    ``layer_inputs``: the teacher's and the student's hidden states entering the sublayer's layer, per batch."""
    layer, kind = sublayer
    projection = sublayer_modules(model, sublayer)[0]
    weight, bias = projection.weight.detach().double(), projection.bias.detach().double()
    size = len(kept) + (1 if faithful and kind == "mha" else 0)
    gram = torch.zeros(size, size, dtype=torch.float64, device=weight.device)
    cross = torch.zeros(size, dtype=torch.float64, device=weight.device)
    kept = kept.to(weight.device)
    teacher_heads, teacher_neurons = teacher_masks
    teacher_inputs, student_inputs = layer_inputs
    if faithful and kind == "ffn":  # official quirk: the teacher's FFN target ignores its own mask at this layer
        teacher_neurons = teacher_neurons.clone()
        teacher_neurons[layer] = 1
    for index, batch in enumerate(batches):
        rows = batch["attention_mask"].bool()
        if cls_only:
            rows = torch.zeros_like(rows)
            rows[:, 0] = True
        with torch.no_grad():
            with (masked(model, teacher_heads, teacher_neurons), capture(model, [sublayer], sublayer,
                  modules=sublayer_modules) as store,
                  start_at(model, layer, None if teacher_inputs is None else teacher_inputs[index])):
                run_until_stop(model, batch)
            target_output = store[sublayer]["z"][rows].double()
            with (masked(model, head_mask, neuron_mask), capture(model, [sublayer], sublayer,
                  modules=sublayer_modules) as store,
                  start_at(model, layer, None if student_inputs is None else student_inputs[index])):
                run_until_stop(model, batch)
        record = store[sublayer]
        residual = (record["z"] - record["proj"])[rows].double()
        target = target_output - bias - residual
        unit_dim = shape.head_dim if kind == "mha" else 1
        batch_gram, batch_cross = scale_normal_equations(record["a"][rows], weight, kept, unit_dim, target,
                                                         ones_column=faithful and kind == "mha")
        gram += batch_gram
        cross += batch_cross
    return gram, cross
