"""Dropout masks on the CPU drawn 4 to a random number: the same Bernoulli distribution at about a quarter of the cost.

PyTorch draws a CPU dropout mask element by element (``bernoulli_``: two Mersenne-Twister outputs, a double and a
comparison per element, in one thread). On 2 cores of an AMD EPYC that was 87 of about 520 ms of a bf16 training
step of MiniLM (batch 32 x 50 tokens; 20 dropouts, 12 M elements), 70 ms per 12 M elements against 10 ms to draw
the same number of random bits as 64-bit integers (``random_``, one per 4 elements), each cut into four 16-bit
lanes compared with a threshold; with the comparison, scale and product (element-wise, parallel) a dropout of 12 M
bf16 elements took 25 against 90 ms.

Within :func:`fast_dropout`, a training-mode dropout of a CPU tensor (``torch.nn.functional.dropout``, what
``nn.Dropout`` calls) and the attention dropout of ``scaled_dot_product_attention`` (PyTorch's math kernel, the
one a CPU runs with dropout, given the mask) take their masks from :func:`keep_mask`. The drop probability is the
16-bit threshold's, ``round(p * 65536) / 65536`` (0.1 -> 0.1000061), and kept values are scaled by the inverse of
*that* keep probability, so the expectation is exact. The masks come from torch's default generator, which the
training loop seeds per batch (:mod:`lmshrink.seeding`): a resumed run draws the masks the uninterrupted one drew.
Other masks than ``bernoulli_``'s, so a model trained with them differs from one trained without them as a
model trained from another seed does. GPUs keep their fused dropout kernels.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

# PyTorch's math attention kernel warns when given a dropout mask ("for testing purposes"); here it is the point. The
# warning reaches Python when the outer scaled_dot_product_attention call returns, after any local catch_warnings,
# so it is filtered for the process, by its exact text.
warnings.filterwarnings("ignore", message="Dropout mask should only be used for testing purposes")

LANES = 65536
"""Values of one 16-bit lane: the drop probability's resolution is 1 / LANES."""


def lane_threshold(p: float) -> int:
    """Number of the 65,536 lane values that drop an element, for a drop probability ``p``."""
    return min(LANES, max(0, round(p * LANES)))


def effective_p(p: float) -> float:
    """The drop probability the masks realise for ``p``."""
    return lane_threshold(p) / LANES


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> Tensor:
    """A bool mask of ``shape``, each element kept with probability ``1 - effective_p(p)``, independently, from
    torch's default CPU generator."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:count]
    return (lanes >= lane_threshold(p) - LANES // 2).view(shape)


def dropout(input: Tensor, p: float) -> Tensor:
    """Training-mode dropout of ``input`` with a :func:`keep_mask` (gradients flow through the kept elements)."""
    return torch.where(keep_mask(input.shape, p), input * (1.0 / (1.0 - effective_p(p))), 0.0)


def attention_with_dropout(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, dropout_p: float,
                           is_causal: bool, scale: float | None, enable_gqa: bool) -> Tensor:
    """``scaled_dot_product_attention`` with dropout, as PyTorch's math kernel computes it on a CPU, given a
    :func:`keep_mask` over the attention weights ``[..., heads of the query, L, S]``."""
    shape = (*query.shape[:-2], query.shape[-2], key.shape[-2])
    mask = keep_mask(shape, dropout_p)
    return torch.ops.aten._scaled_dot_product_attention_math(
        query, key, value, attn_mask, effective_p(dropout_p), is_causal, dropout_mask=mask, scale=scale,
        enable_gqa=enable_gqa)[0]


class _FastDropout(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            return self._dropout(func, args, kwargs)
        if func is F.scaled_dot_product_attention:
            return self._attention(func, args, kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def _dropout(func, args, kwargs):
        names = ("input", "p", "training", "inplace")
        given = {**dict(zip(names, args)), **kwargs}
        input, p = given["input"], given.get("p", 0.5)
        if not given.get("training", True) or not 0 < effective_p(p) < 1 or input.device.type != "cpu" \
                or given.get("inplace"):
            return func(*args, **kwargs)
        return dropout(input, p)

    @staticmethod
    def _attention(func, args, kwargs):
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        given = {**dict(zip(names, args)), **kwargs}
        p = given.get("dropout_p", 0.0)
        if not 0 < effective_p(p) < 1 or given["query"].device.type != "cpu" or set(given) - set(names):
            return func(*args, **kwargs)
        return attention_with_dropout(given["query"], given["key"], given["value"], given.get("attn_mask"), p,
                                       given.get("is_causal", False), given.get("scale"),
                                       given.get("enable_gqa", False))


def fast_dropout() -> TorchFunctionMode:
    """Within ``with fast_dropout():``, CPU dropout masks come from :func:`keep_mask` (module docstring); a
    probability the 16-bit lanes cannot tell from 0 or 1 (closer than 1 / 131072), an in-place dropout and a GPU
    tensor are left to PyTorch."""
    return _FastDropout()
