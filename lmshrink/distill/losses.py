"""Knowledge-distillation losses, plain PyTorch (no Lightning).

Shapes: ``B`` batch, ``S`` sequence, ``C`` classes or vocabulary, ``H`` hidden width, ``A`` attention
heads. ``mask`` is ``[B]`` (classification) or ``[B, S]`` (token level) with True where a position
counts; a loss over a batch where nothing counts is 0 (and keeps the graph), never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is True; 0 when none is."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def soft_target_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0,
                   mask: Tensor | None = None) -> Tensor:
    """KL(teacher || student) of temperature-softened distributions, times ``T**2`` (Hinton et al. 2015),
    so the gradient size does not depend on T.

    Args:
        student_logits, teacher_logits: ``[B, C]`` or ``[B, S, C]`` (token level: causal LMs).
        mask: ``[B]`` or ``[B, S]``; padding positions excluded. The mean is over counted positions.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_position = _kl_terms(teacher_log_probs, student_log_probs, student_logits, teacher_logits).sum(dim=-1)
    return _masked_mean(per_position, mask) * temperature**2


def _kl_terms(teacher_log_probs: Tensor, student_log_probs: Tensor, *logits: Tensor) -> Tensor:
    """``p_t * (log p_t - log p_s)`` per class, 0 where a logit is infinite (a masked vocabulary entry): there
    ``0 * -inf`` would be NaN (torchtune's KD losses mask the same way)."""
    terms = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    infinite = torch.zeros_like(terms, dtype=torch.bool)
    for values in logits:
        infinite |= torch.isinf(values)
    return terms.masked_fill(infinite, 0.0)


def soft_target_kl_from_probs(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """:func:`soft_target_kl` against teacher probabilities already softened at ``temperature`` (K-prune computes
    them once for its whole sample; the pruning spec §3.1 fixes this direction and ``batchmean``).

    Args:
        student_logits: ``[B, C]``; computed in its precision but at least fp32 (fp64 stays fp64: the spec's
            identity checks need it).
        teacher_probs: ``[B, C]``, rows summing to 1; zero entries add nothing (``kl_div``'s convention).
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    return F.kl_div(log_student, teacher_probs.to(dtype), reduction="batchmean") * temperature**2


def topk_soft_target_kl(student_logits: Tensor, teacher_topk_values: Tensor, teacher_topk_indices: Tensor,
                        temperature: float = 2.0, mask: Tensor | None = None) -> Tensor:
    """:func:`soft_target_kl` against a teacher stored as its top-k logits (cached to disk).

    The teacher distribution is renormalised over its k kept classes; the student's log-probabilities are
    taken over the full vocabulary at those classes, so with k = C this equals :func:`soft_target_kl`.

    Args:
        student_logits: ``[..., C]``; teacher_topk_values / teacher_topk_indices: ``[..., k]``.
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    student_at_topk = student_log_probs.gather(-1, teacher_topk_indices.long())
    teacher_log_probs = F.log_softmax(teacher_topk_values.float() / temperature, dim=-1)
    student_topk_logits = student_logits.gather(-1, teacher_topk_indices.long())
    per_position = _kl_terms(teacher_log_probs, student_at_topk, student_topk_logits, teacher_topk_values).sum(dim=-1)
    return _masked_mean(per_position, mask) * temperature**2


def hidden_mse(student_hidden: Tensor, teacher_hidden: Tensor, projection: nn.Module | None = None,
               mask: Tensor | None = None) -> Tensor:
    """MSE between hidden states ``[B, S, H_s]`` and ``[B, S, H_t]`` (TinyBERT, Jiao et al. 2020); a learned
    ``projection`` ``H_s -> H_t`` maps the student when the widths differ. ``mask`` ``[B, S]``."""
    if projection is not None:
        student_hidden = projection(student_hidden)
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden shapes differ: student {tuple(student_hidden.shape)} vs teacher "
                         f"{tuple(teacher_hidden.shape)}; pass a projection")
    return _masked_mean((student_hidden.float() - teacher_hidden.float()).pow(2), mask)


def cosine_hidden_loss(student_hidden: Tensor, teacher_hidden: Tensor, projection: nn.Module | None = None,
                       mask: Tensor | None = None) -> Tensor:
    """``1 - cos`` between student and teacher hidden vectors per position (DistilBERT, Sanh et al. 2019)."""
    if projection is not None:
        student_hidden = projection(student_hidden)
    cosine = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return _masked_mean(1 - cosine, mask)


def attention_kl(student_attention: Tensor, teacher_attention: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL(teacher || student) between attention distributions ``[B, A, S, S]`` per query (MiniLM, Wang et al.
    2020). Head counts may differ: both are averaged over heads first. ``mask`` ``[B, S]`` drops padded
    queries (padded keys already have ~0 probability)."""
    student = student_attention.float().mean(dim=1).clamp(min=1e-12)
    teacher = teacher_attention.float().mean(dim=1).clamp(min=1e-12)
    per_query = (teacher * (teacher.log() - student.log())).sum(dim=-1)
    return _masked_mean(per_query, mask)
