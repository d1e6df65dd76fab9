"""K-prune (Park, Choi, Kang, ICLR 2024): retraining-free structured pruning by knowledge preservation.

Spec §3. The 2L sublayers are decided bottom-up. For target sublayer t, one pass over the sample through the
current (partly pruned) student measures every still-prunable unit (predictive knowledge: squared per-batch
gradients of the KD loss w.r.t. the unit's mask; representational knowledge: the energy its removal takes out
of the pre-LN output), a global threshold under the remaining FLOPs budget decides t's units (KPMS), and
least squares re-fits t's surviving output-projection columns to the dense teacher's pre-LN output (KPWT).

Implementation choices (corrected mode, the default):

- Pruning happens in the mask domain: masks zero units, KPWT rewrites columns of the student's output
  projections, and :func:`~lmshrink.pruning.encoder.slicing.slice_encoder` cuts the weights at the end (masked and
  sliced models are equal, tested).
- The dense teacher's pre-LN outputs are recomputed per batch (a forward stopped at the target sublayer)
  rather than stored for every sublayer. What is stored is the input of the target's layer, per batch, for the
  student and the teacher (2 x padded sample tokens x d floats, e.g. 2 x 0.17 GB for MiniLM at 100K tokens):
  every pass starts there instead of at the embeddings, which skips the decided layers forward and backward
  (1.7x faster on MiniLM, same masks; see :mod:`~lmshrink.pruning.encoder.layer_inputs`).
- Paper threshold semantics; a fully pruned sublayer keeps its output bias (``LN(x + b)``); an FFN with
  nothing pruned keeps its tuned weights; the solve is fp64 Cholesky with a tiny ridge and never accepts
  weights that fit the sample worse.

``faithful=True`` reproduces the official code's quirks instead (spec §3.6 items 4-6 and its solver).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmshrink.distill.losses import soft_target_kl_from_probs
from lmshrink.pruning.encoder.arch import EncoderShape, shape_of, sublayer_modules
from lmshrink.pruning.capture import Sublayer, capture, run_until_stop, sublayer_order
from lmshrink.pruning.flops import FlopsBudget, encoder_flops, head_flops, neuron_flops
from lmshrink.pruning.encoder.layer_inputs import next_layer_inputs, start_at
from lmshrink.pruning.least_squares import NormalEquations, solve_faithful, solve_never_worse
from lmshrink.pruning.encoder.gates import masked
from lmshrink.pruning.score_precision import ScorePrecision, scoring
from lmshrink.pruning.search import threshold_keep
from lmshrink.pruning.settings import KPruneSettings

log = logging.getLogger(__name__)


@dataclass
class SublayerStep:
    """What happened at one target sublayer (logged in the pruning record)."""

    sublayer: Sublayer
    candidates: int
    kept: int
    total: int
    budget_left: float
    num_tokens: int
    token_hash: str
    tuning: dict = field(default_factory=dict)


@dataclass
class KPruneResult:
    head_mask: Tensor  # [L, H], 0/1
    neuron_mask: Tensor  # [L, N], 0/1
    steps: list[SublayerStep]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage (:class:`StageClock`): where the pruning time goes."""


class StageClock:
    """Wall seconds summed per named stage of K-prune: ``teacher_labels`` (the teacher's soft labels, once),
    ``layer_inputs`` (advancing the stored inputs of the next layer), ``teacher_targets`` (the dense teacher's
    pre-LN output at the target), ``scores`` (the student's forward and backward: both knowledge scores),
    ``normal_equations`` (KPWT's fp64 ``A^T A``, ``A^T B``; with bf16 scores, also the float32 forward up to the
    target that captures KPWT's inputs), ``mask_search`` and ``solve``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def _at_least_fp32(logits: Tensor) -> Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _non_pad(tensor: Tensor, attention_mask: Tensor) -> Tensor:
    return tensor[attention_mask.bool()]


def _token_hash(batches: Sequence[dict[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(_non_pad(batch["input_ids"], batch["attention_mask"]).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Scores:
    """Predictive (P) and representational (R) sums of one pass, per head dimension and per neuron."""

    def __init__(self, shape: EncoderShape) -> None:
        width = shape.num_heads * shape.head_dim
        self.pred_head, self.rep_head = torch.zeros(shape.num_layers, width), torch.zeros(shape.num_layers, width)
        self.pred_neuron, self.rep_neuron = torch.zeros(shape.num_layers, shape.ffn), torch.zeros(shape.num_layers, shape.ffn)
        self.predictions = 0
        """Rows the predictive loss averages over: sentences for a sequence classifier, non-padding tokens for a
        token classifier (whose predictive knowledge is the tag distribution at every token)."""
        self.tokens = 0


def prediction_rows(logits: Tensor, attention_mask: Tensor) -> Tensor:
    """The rows the predictive loss compares: ``[B, C]`` logits as they are; a token classifier's ``[B, T, C]`` at its
    non-padding tokens, ``[tokens, C]`` (spec §3.1's KL, ``batchmean``, then averages over tokens)."""
    return _non_pad(logits, attention_mask) if logits.dim() == 3 else logits


def teacher_soft_labels(teacher: nn.Module, batches: Sequence[dict[str, Tensor]], temperature: float,
                        score_precision: ScorePrecision = "32") -> list[Tensor]:
    """The dense teacher's softened predictions, in the precision of the scoring passes they are compared with: a
    student still equal to the teacher then has no predictive knowledge to lose (spec §7.11) in bf16 as in float32,
    instead of gradients of bf16 rounding."""
    with torch.no_grad(), scoring(score_precision, batches[0]["input_ids"].device if batches else "cpu"):
        return [F.softmax(_at_least_fp32(prediction_rows(teacher(**batch).logits, batch["attention_mask"]))
                          / temperature, dim=-1) for batch in batches]


def unit_scores(scores: _Scores, model: nn.Module, shape: EncoderShape, settings: KPruneSettings, seq_len: float
                ) -> tuple[Tensor, Tensor]:
    """Final ``S_head`` ``[L, H]`` and ``S_neuron`` ``[L, N]``: importance per GFLOP at ``seq_len`` (spec §3.2)."""
    mu = settings.mu if settings.mu is not None else shape.head_dim
    f_head = head_flops(seq_len, shape.hidden, shape.head_dim) / 1e9
    f_neuron = neuron_flops(seq_len, shape.hidden) / 1e9
    column_energy_head = torch.stack([sublayer_modules(model, (l, "mha"))[0].weight.detach().pow(2).mean(0).cpu()
                                      for l in range(shape.num_layers)])
    column_energy_neuron = torch.stack([sublayer_modules(model, (l, "ffn"))[0].weight.detach().pow(2).mean(0).cpu()
                                        for l in range(shape.num_layers)])
    pred_head = scores.pred_head / scores.predictions
    rep_head = scores.rep_head * column_energy_head / scores.tokens
    pred_neuron = scores.pred_neuron / scores.predictions
    rep_neuron = scores.rep_neuron * column_energy_neuron / scores.tokens
    per_dim = settings.lam_pred * pred_head + settings.lam_rep * rep_head
    head = mu * per_dim.view(shape.num_layers, shape.num_heads, shape.head_dim).mean(-1) / f_head
    neuron = (settings.lam_pred * pred_neuron + settings.lam_rep * rep_neuron) / f_neuron
    return head, neuron


def kprune_steps(model: nn.Module, batches: Sequence[dict[str, Tensor]], budget: FlopsBudget,
                 settings: KPruneSettings = KPruneSettings(), clock: StageClock | None = None,
                 score_precision: ScorePrecision = "32") -> Iterator[tuple[SublayerStep, Tensor, Tensor]]:
    """Run K-prune on ``model`` (changed in place: output-projection columns are re-fitted), yielding after every
    sublayer ``(step, head_mask, neuron_mask)``. ``batches`` hold model inputs only, in a fixed order.
    ``score_precision``: the precision of the scoring passes and of the teacher's soft labels they compare with
    (:mod:`~lmshrink.pruning.score_precision`); the teacher's targets, the stored layer inputs and KPWT's inputs
    are float32 either way.

    The hidden states entering the target's layer are kept per batch for the student and the teacher (2 x the
    sample's padded tokens x d floats) and every pass starts there: the layers below are decided and cannot
    change, so this only skips work (:mod:`~lmshrink.pruning.encoder.layer_inputs`; the same numbers, tested)."""
    clock = clock or StageClock()
    shape = shape_of(model)
    model.eval().requires_grad_(False)
    teacher = copy.deepcopy(model)
    with clock("teacher_labels"):
        teacher_probs = teacher_soft_labels(teacher, batches, settings.temperature, score_precision)
    token_hash = _token_hash(batches)
    f_head = head_flops(budget.seq_len, shape.hidden, shape.head_dim)
    f_neuron = neuron_flops(budget.seq_len, shape.hidden)
    flops_left = budget.keep_ratio * encoder_flops(shape, budget.seq_len)
    head_keep = torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool)
    neuron_keep = torch.ones(shape.num_layers, shape.ffn, dtype=torch.bool)
    start = time.perf_counter()
    inputs: tuple[list[Tensor], list[Tensor]] | None = None  # (student, teacher) hidden states entering `layer`
    for target in sublayer_order(shape.num_layers):
        layer, kind = target
        if kind == "mha" and layer > 0:
            with clock("layer_inputs"), masked(model, head_keep.float(), neuron_keep.float()):
                inputs = (next_layer_inputs(model, batches, layer - 1, inputs and inputs[0]),
                          next_layer_inputs(teacher, batches, layer - 1, inputs and inputs[1]))
        head_score, neuron_score, problem, num_tokens = measure_sublayer(
            model, teacher, batches, teacher_probs, head_keep, neuron_keep, target, settings, budget.seq_len,
            inputs, clock, score_precision)
        # Candidates: units of sublayers >= t; for an FFN target, its own layer's heads are already decided.
        first_head_layer = layer if kind == "mha" else layer + 1
        candidate_scores = torch.cat([head_score[first_head_layer:].flatten(), neuron_score[layer:].flatten()])
        num_head_candidates = head_score[first_head_layer:].numel()
        costs = torch.cat([torch.full((num_head_candidates,), f_head),
                           torch.full((neuron_score[layer:].numel(),), f_neuron)])
        with clock("mask_search"):
            keep = threshold_keep(candidate_scores, costs, flops_left, faithful=settings.faithful)
        if kind == "mha":
            survivors = keep[: shape.num_heads]
            head_keep[layer] = survivors
        else:
            survivors = keep[num_head_candidates: num_head_candidates + shape.ffn]
            neuron_keep[layer] = survivors
        with clock("solve"):
            tuning = (_tune_sublayer(model, target, survivors, problem, shape, settings) if settings.weight_tuning
                      else {})
        flops_left -= int(survivors.sum()) * (f_head if kind == "mha" else f_neuron)
        step = SublayerStep(target, len(candidate_scores), int(survivors.sum()), survivors.numel(), flops_left,
                            num_tokens, token_hash, tuning)
        log.info("K-prune %s %d: kept %d/%d, %s, %.0f s", kind.upper(), layer, step.kept, step.total,
                 "tuned" if tuning.get("accepted") else "not tuned", time.perf_counter() - start)
        yield step, head_keep.float(), neuron_keep.float()


def measure_sublayer(model: nn.Module, teacher: nn.Module, batches: Sequence[dict[str, Tensor]],
                     teacher_probs: Sequence[Tensor], head_keep: Tensor, neuron_keep: Tensor, target: Sublayer,
                     settings: KPruneSettings, seq_len: float,
                     inputs: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None, clock: StageClock | None = None,
                     score_precision: ScorePrecision = "32") -> tuple[Tensor, Tensor, NormalEquations, int]:
    """One knowledge-measurement pass for ``target`` (spec §3.3 step 1): scores ``[L, H]`` and ``[L, N]`` of
    the student with the given keep-masks (only layers >= the target's are filled), the target's normal
    equations for KPWT, and the number of non-pad tokens seen. ``inputs``: the student's and the teacher's
    hidden states entering the target's layer, per batch (``None``: run from the embeddings)."""
    clock = clock or StageClock()
    shape = shape_of(model)
    scores, problem = _Scores(shape), NormalEquations()
    head_gates = head_keep.float().repeat_interleave(shape.head_dim, dim=1)
    neuron_gates = neuron_keep.float()
    order = sublayer_order(shape.num_layers)
    scored = order[order.index(target):]
    for index, (batch, probs) in enumerate(zip(batches, teacher_probs)):
        hidden = (None, None) if inputs is None else (inputs[0][index], inputs[1][index])
        _measure_batch(model, teacher, batch, probs, head_gates, neuron_gates, target, scored, scores, problem,
                       settings, hidden, clock, score_precision)
    head_score, neuron_score = unit_scores(scores, model, shape, settings, seq_len)
    return head_score, neuron_score, problem, scores.tokens


def kprune(model: nn.Module, batches: Sequence[dict[str, Tensor]], budget: FlopsBudget,
           settings: KPruneSettings = KPruneSettings(), score_precision: ScorePrecision = "32") -> KPruneResult:
    """Prune ``model`` in place (mask domain) and return its final 0/1 masks and the per-sublayer log."""
    start, clock = time.perf_counter(), StageClock()
    steps, head_mask, neuron_mask = [], None, None
    for step, head_mask, neuron_mask in kprune_steps(model, batches, budget, settings, clock, score_precision):
        steps.append(step)
    return KPruneResult(head_mask, neuron_mask, steps, time.perf_counter() - start, dict(clock.seconds))


def _measure_batch(model, teacher, batch, probs, head_gates, neuron_gates, target: Sublayer,
                   scored: list[Sublayer], scores: _Scores, problem: NormalEquations, settings: KPruneSettings,
                   hidden: tuple[Tensor | None, Tensor | None], clock: StageClock,
                   score_precision: ScorePrecision = "32") -> None:
    layer = target[0]
    attention_mask = batch["attention_mask"]
    with clock("teacher_targets"), torch.no_grad(), capture(teacher, [target], stop_after=target, modules=sublayer_modules) as teacher_store, \
            start_at(teacher, layer, hidden[1]):
        run_until_stop(teacher, batch)
    teacher_output = _non_pad(teacher_store[target]["z"], attention_mask)
    head_leaf = head_gates[layer:].clone().requires_grad_(True)
    neuron_leaf = neuron_gates[layer:].clone().requires_grad_(True)
    heads = torch.cat([head_gates[:layer], head_leaf])
    neurons = torch.cat([neuron_gates[:layer], neuron_leaf])
    with clock("scores"):
        with masked(model, heads, neurons), capture(model, scored, modules=sublayer_modules) as store, \
                start_at(model, layer, hidden[0]), scoring(score_precision, attention_mask.device):
            logits = prediction_rows(model(**batch).logits, attention_mask)
            loss = soft_target_kl_from_probs(logits, probs, settings.temperature)  # spec §3.1, one KD formula
            head_grad, neuron_grad = torch.autograd.grad(loss, [head_leaf, neuron_leaf])
        scores.pred_head[layer:] += 0.5 * head_grad.pow(2).cpu()
        scores.pred_neuron[layer:] += 0.5 * neuron_grad.pow(2).cpu()
        for (sub_layer, kind), record in store.items():
            energy = _non_pad(record["a"].detach().float(), attention_mask).pow(2).sum(0).cpu()
            (scores.rep_head if kind == "mha" else scores.rep_neuron)[sub_layer] += energy
        scores.predictions += logits.shape[0]
        scores.tokens += int(attention_mask.sum())
    with clock("normal_equations"):
        if score_precision != "32":  # KPWT fits float32 captures: the target's inputs again, in a float32 forward
            with torch.no_grad(), masked(model, heads.detach(), neurons.detach()), \
                    capture(model, [target], stop_after=target, modules=sublayer_modules) as store, \
                    start_at(model, layer, hidden[0]):
                run_until_stop(model, batch)
        record = store[target]
        features = _non_pad(record["a"].detach(), attention_mask)
        residual = _non_pad((record["z"] - record["proj"]).detach(), attention_mask)
        bias = sublayer_modules(model, target)[0].bias.detach()
        problem.add(features, teacher_output - residual - bias)


def _tune_sublayer(model: nn.Module, target: Sublayer, survivors: Tensor, problem: NormalEquations,
                   shape: EncoderShape, settings: KPruneSettings) -> dict:
    """KPWT: re-fit the surviving columns of the target's output projection (spec §3.3 step 3)."""
    projection = sublayer_modules(model, target)[0]
    columns = survivors.repeat_interleave(shape.head_dim) if target[1] == "mha" else survivors
    index = columns.nonzero().flatten()
    if len(index) == 0:
        if settings.faithful:  # official: the whole sublayer becomes LayerNorm(input), dropping the bias
            with torch.no_grad():
                projection.bias.zero_()
        return {"skipped": "no unit survives"}
    if settings.faithful and bool(survivors.all()) and target[1] == "ffn":
        return {"skipped": "faithful: an FFN with nothing pruned discards its tuned weights"}
    current = projection.weight.detach()[:, index.to(projection.weight.device)].T.cpu()
    restricted = problem.restricted(index)
    solve = solve_faithful if settings.faithful else solve_never_worse
    solution = solve(restricted, current) if settings.faithful else solve(restricted, current, settings.ridge)
    with torch.no_grad():
        projection.weight[:, index.to(projection.weight.device)] = solution.weight.T.to(projection.weight)
    return {"error_before": solution.error_before, "error_after": solution.error_after,
            "condition": solution.condition, "accepted": solution.accepted, "notes": solution.notes}
