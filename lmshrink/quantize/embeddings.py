"""Weight-only quantization of ``nn.Embedding`` tables.

Linear-layer schemes leave the word embeddings in float, and in small encoders they are half the model
(MiniLM: 30,522 x 384 of 22.6 M parameters), so sizes stop near 0.6 of fp32.

- ``int8``: :class:`Int8RowEmbedding`, symmetric int8 with one scale per row, that looks rows up and then scales
  them. Written here because the library paths cost too much or cannot be saved: torchao's
  ``IntxWeightOnlyConfig`` embedding dequantizes the whole table on every call (measured on MiniLM: batch-1
  latency 3.7x fp32), and bitsandbytes' ``Embedding8bit`` (the same gather-then-scale) refuses to be saved.
- ``int4``: :class:`Int4GroupEmbedding`, symmetric int4 with a scale per 32 values, two values packed per byte,
  unpacked after the lookup. torchao's ``IntxWeightOnlyConfig(int4)`` embedding was used before: on CPU it keeps
  the int4 values unpacked in int8 bytes (no smaller than int8) and dequantizes the whole table per call.

A table whose weight is shared with another module (an LM head tied to the input embeddings) stays float and is
reported: quantizing one side would untie them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EmbeddingBits = Literal["float", "int8", "int4"]


class Int8RowEmbedding(nn.Module):
    """An embedding table in int8 with a float scale per row (absmax / 127); a lookup gathers the int8 rows and
    their scales, so it costs a lookup, not a dequantization of the table."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        weight = embedding.weight.detach()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(weight.dtype).tiny) / 127
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = embedding.padding_idx

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.qweight).to(self.scale.dtype)
        return rows * F.embedding(ids, self.scale[:, None])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row scales"


INT4_GROUP = 32
"""Values per int4 scale (the group size of torchao's and GPTQ's int4 weights)."""


class Int4GroupEmbedding(nn.Module):
    """An embedding table in int4 (symmetric, [-7, 7]) with a float scale per group of :data:`INT4_GROUP` values
    of a row, two values per byte; a lookup gathers the packed rows and their scales, then unpacks them."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        weight = embedding.weight.detach()
        rows, dim = weight.shape
        groups = weight.reshape(rows, dim // INT4_GROUP, INT4_GROUP)
        scale = groups.abs().amax(dim=-1).clamp(min=torch.finfo(weight.dtype).tiny) / 7
        codes = (torch.round(groups / scale[..., None]).clamp(-7, 7) + 8).to(torch.uint8).reshape(rows, dim)
        self.register_buffer("packed", codes[:, 0::2] | (codes[:, 1::2] << 4))  # [rows, dim / 2]
        self.register_buffer("scale", scale)  # [rows, dim / INT4_GROUP]
        self.num_embeddings, self.embedding_dim = rows, dim
        self.padding_idx = embedding.padding_idx

    def forward(self, ids: Tensor) -> Tensor:
        packed = F.embedding(ids, self.packed)
        codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2).to(self.scale.dtype) - 8
        scales = F.embedding(ids, self.scale).repeat_interleave(INT4_GROUP, dim=-1)
        return codes * scales

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int4 packed, scales per {INT4_GROUP}"


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` of ``model`` was."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _shared_weights(model: nn.Module) -> dict[int, int]:
    """How many modules hold each parameter (by id)."""
    counts: dict[int, int] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    return counts


def quantize_embeddings(model: nn.Module, bits: EmbeddingBits, skip: set[str]) -> tuple[list[str], dict[str, str]]:
    """Quantize the ``nn.Embedding`` modules not named in ``skip`` in place; returns (quantized names, {skipped
    name: why})."""
    if bits == "float":
        return [], {}
    shared = _shared_weights(model)
    skipped, targets = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            if name in skip:
                skipped[name] = "in skip_modules"
            elif shared[id(module.weight)] > 1:
                skipped[name] = "weight tied to another module (an LM head)"
            elif module.embedding_dim % INT4_GROUP and bits == "int4":
                skipped[name] = (f"embedding_dim={module.embedding_dim} not a multiple of the int4 group size "
                                 f"{INT4_GROUP}")
            else:
                targets.append(name)
    table = Int8RowEmbedding if bits == "int8" else Int4GroupEmbedding
    for name in targets:
        replace_module(model, name, table(model.get_submodule(name)))
    return sorted(targets), skipped
