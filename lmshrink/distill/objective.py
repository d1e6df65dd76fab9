"""``DistillationObjective``: the weighted distillation loss between one student pass and one teacher pass.

Plain PyTorch (no Lightning), as torchtune's ``kd_losses.py``: the Lightning module runs both networks and
hands their outputs here. The objective owns what the loss needs beyond the two networks: the weight of
each term, the temperature, which teacher block each student block imitates, and the learned projections
that map the student's hidden width to the teacher's (trained with the student, not saved with it).

Shapes: ``B`` batch, ``S`` sequence, ``C`` classes (classifier) or vocabulary (causal LM), ``H_s``/``H_t``
hidden widths, ``A_s``/``A_t`` attention heads, ``L_s`` student blocks.

- ``student_out`` / ``teacher_out``: HF model outputs. ``logits`` ``[B, C]`` (classifier) or ``[B, S, C]``
  (causal LM, or token classifier: tags per sub-token); with a hidden-state term also ``hidden_states``
  (``L + 1`` tensors ``[B, S, H]``: the embeddings, then each block's output); with the attention term also
  ``attentions`` (``L`` tensors ``[B, A, S, S]``).
- ``batch``: ``attention_mask`` ``[B, S]``; ``labels`` ``[B]`` (classifier, -100 = no label), ``[B, S]`` (token
  classifier: each word's first sub-token labelled, padding and other sub-tokens -100, so KD and CE count words) or
  ``input_ids`` ``[B, S]`` (causal LM: the next-token loss).
- ``cached``: the teacher as top-k logits ``(values, indices)``, each ``[B, k]``, instead of ``teacher_out``.

Block indices are 0-based everywhere (``layer_map[i]`` is the teacher block student block ``i`` imitates, as
``Distillation``'s ``student.layers`` counts blocks); hidden state ``i + 1`` is block ``i``'s output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmshrink.distill import losses
from lmshrink.distill.next_token import next_token_nll
from lmshrink.metrics.groups import IGNORE_INDEX

TERMS = ("kd", "ce", "hidden", "cosine", "attention", "embedding")
"""Soft-target KL (Hinton), gold-label / next-token cross-entropy, hidden-state MSE (TinyBERT), last hidden
cosine (DistilBERT), attention-map KL (MiniLM), embedding-output MSE (TinyBERT)."""
HIDDEN_STATE_TERMS = ("hidden", "cosine", "embedding")


class DistillationObjective(nn.Module):
    """Weighted sum of the distillation terms with a non-zero weight (see the module docstring for shapes)."""

    def __init__(self, weights: dict[str, float], temperature: float, layer_map: list[int], student_width: int,
                 teacher_width: int, causal_lm: bool = False) -> None:
        """
        Args:
            weights: ``{term: weight}`` over :data:`TERMS`; terms with weight 0 are not computed.
            temperature: Softmax temperature of the soft-target KL.
            layer_map: Teacher block (0-based) for each student block, ``len == L_s``.
            student_width, teacher_width: ``H_s`` and ``H_t``; when they differ, hidden-state terms go through
                learned ``H_s -> H_t`` projections (``projections[0]`` the embeddings, ``[i + 1]`` block ``i``).
            causal_lm: Token-level distillation of a generator: every non-padding position counts and ``ce`` is
                the next-token loss; otherwise one prediction per example and ``ce`` is against ``labels``.
        """
        super().__init__()
        unknown = sorted(set(weights) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown distillation terms {unknown}; known: {list(TERMS)}")
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.weights = {name: float(weights[name]) for name in TERMS if weights.get(name)}
        self.temperature = temperature
        self.layer_map = list(layer_map)
        self.causal_lm = causal_lm
        needs_projection = student_width != teacher_width and self.uses_hidden_states
        self.projections = nn.ModuleList(
            [nn.Linear(student_width, teacher_width) for _ in range(len(layer_map) + 1)] if needs_projection else []
        )

    @property
    def uses_hidden_states(self) -> bool:
        """Whether a term compares hidden states (both networks must return ``hidden_states``)."""
        return any(name in self.weights for name in HIDDEN_STATE_TERMS)

    @property
    def uses_attentions(self) -> bool:
        """Whether the attention term is on (both networks must return ``attentions``: eager attention)."""
        return "attention" in self.weights

    def _projection(self, hidden_state_index: int) -> nn.Module | None:
        return self.projections[hidden_state_index] if len(self.projections) else None

    def terms(self, student_out, teacher_out, batch: dict[str, Tensor],
              cached: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """Each term with a non-zero weight, unweighted, by name."""
        token_mask = batch["attention_mask"].bool()  # [B, S]: real tokens
        # where a prediction counts: every real token of a generator, every labelled example of a classifier
        prediction_mask = token_mask if self.causal_lm else batch["labels"] != IGNORE_INDEX
        terms = {}
        if "kd" in self.weights and cached is not None:
            values, indices = cached
            terms["kd"] = losses.topk_soft_target_kl(student_out.logits, values, indices, self.temperature,
                                                     prediction_mask)
        elif "kd" in self.weights:
            terms["kd"] = losses.soft_target_kl(student_out.logits, teacher_out.logits, self.temperature,
                                                prediction_mask)
        if "ce" in self.weights and self.causal_lm:
            nll = next_token_nll(student_out.logits, batch["input_ids"], token_mask)
            terms["ce"] = nll.sum() / max(nll.numel(), 1)  # a batch without any next token adds 0, not NaN
        elif "ce" in self.weights:
            terms["ce"] = F.cross_entropy(student_out.logits.flatten(0, -2).float(), batch["labels"].flatten(),
                                          ignore_index=IGNORE_INDEX)
        student_hidden = student_out.hidden_states if self.uses_hidden_states else None
        teacher_hidden = teacher_out.hidden_states if self.uses_hidden_states else None
        if "embedding" in self.weights:
            terms["embedding"] = losses.hidden_mse(student_hidden[0], teacher_hidden[0], self._projection(0),
                                                   token_mask)
        if "hidden" in self.weights:
            terms["hidden"] = torch.stack([
                losses.hidden_mse(student_hidden[s + 1], teacher_hidden[t + 1], self._projection(s + 1), token_mask)
                for s, t in enumerate(self.layer_map)
            ]).mean()
        if "cosine" in self.weights:
            last = len(self.layer_map)
            terms["cosine"] = losses.cosine_hidden_loss(student_hidden[last], teacher_hidden[-1],
                                                        self._projection(last), token_mask)
        if "attention" in self.weights:
            terms["attention"] = torch.stack([
                losses.attention_kl(student_out.attentions[s], teacher_out.attentions[t], token_mask)
                for s, t in enumerate(self.layer_map)
            ]).mean()
        return terms

    def forward(self, student_out, teacher_out, batch: dict[str, Tensor],
                cached: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted sum, {term: unweighted value})``; ``teacher_out`` may be None only with ``cached`` and
        logit terms alone."""
        terms = self.terms(student_out, teacher_out, batch, cached)
        return sum(self.weights[name] * value for name, value in terms.items()), terms
