"""Teacher logits cached to disk, so that a teacher is not run again on inputs it has already seen.

- Distillation: top-k per training example (:func:`compute_topk_logits`), so epochs after the first skip the
  teacher forward. The teacher runs in eval mode, so its logits are a pure function of the input: caching them is
  exact (with k equal to the number of classes) or the usual top-k approximation (many classes). Causal-LM
  teachers (per-token vocabulary logits) are not cached.
- Comparison: every logit of the reference per evaluation batch (:class:`BatchLogitsCache`), so that the models a
  study compares with one teacher on the same batches do not each run the teacher again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor


def cache_fingerprint(*parts) -> str:
    """A short name that changes when the teacher, the data or k change."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


@torch.no_grad()
def compute_topk_logits(teacher_logits: Callable[[dict], Tensor], batches: Iterable[dict], size: int, k: int
                        ) -> dict[str, Tensor]:
    """Run the teacher over every example once; keep the k largest logits and their class ids per example.

    ``batches`` must carry ``index`` (row of each example); ``size`` is the number of examples.
    """
    values = indices = None
    for batch in batches:
        logits = teacher_logits(batch).float()
        top_values, top_indices = logits.topk(min(k, logits.shape[-1]), dim=-1)
        if values is None:
            values = torch.zeros(size, *top_values.shape[1:])
            indices = torch.zeros(size, *top_indices.shape[1:], dtype=torch.long)
        rows = batch["index"].cpu()
        values[rows], indices[rows] = top_values.cpu(), top_indices.cpu()
    return {"values": values, "indices": indices}


def load_or_build(path: Path, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    cache = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated cache behind
    return cache


class BatchLogitsCache:
    """A network's logits per batch, on disk, by the batch's content: ``logits(inputs, compute)`` returns the kept
    logits of exactly these inputs or runs ``compute`` and keeps its result.

    The file is named by ``fingerprint``, which must change with anything else the logits depend on (the weights'
    digest, the architecture, the kernels' versions, threads); the key of a batch is a digest of its input tensors
    (names, dtypes, shapes, bytes) and of the autocast state it is computed under. So a kept result is served only
    for the same network, on the same padded batch, at the same precision: bitwise what ``compute`` would return.
    Each process (DDP rank) writes its own file, atomically; all of a fingerprint's files are read. Two runs writing
    the same file at once leave the last one's: an entry lost so is computed again, never served wrong."""

    def __init__(self, directory: str | Path, fingerprint: str, rank: int = 0) -> None:
        self.directory, self.fingerprint = Path(directory), fingerprint
        self.path = self.directory / f"logits_{fingerprint}.rank{rank}.pt"
        self.entries: dict[str, torch.Tensor] = {}
        for path in sorted(self.directory.glob(f"logits_{fingerprint}.rank*.pt")):
            self.entries.update(torch.load(path, map_location="cpu", weights_only=True))
        self.served = self.computed = 0

    @staticmethod
    def key(inputs: Mapping[str, Tensor]) -> str:
        digest = hashlib.sha256()
        device = next(iter(inputs.values())).device.type if inputs else "cpu"
        digest.update(f"autocast={torch.is_autocast_enabled(device)},{torch.get_autocast_dtype(device)}|".encode())
        for name, tensor in sorted(inputs.items()):
            tensor = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def logits(self, inputs: Mapping[str, Tensor], compute: Callable[[], Tensor]) -> Tensor:
        key = self.key(inputs)
        if key in self.entries:
            self.served += 1
            return self.entries[key].to(next(iter(inputs.values())).device)
        logits = compute()
        self.entries[key] = logits.detach().to("cpu")
        self.computed += 1
        return logits

    def save(self) -> None:
        """Write this process's entries (with those its file already held), if it computed any."""
        if not self.computed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        torch.save(self.entries, tmp)
        tmp.replace(self.path)  # atomic: a reader never sees half a file
