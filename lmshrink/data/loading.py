"""Datasets, samplers and loaders that make training resumable mid-epoch and evaluation exact under DDP.

Two properties drive the design:

- *Same run on 1 or N processes.* The training sampler is a ``DistributedSampler`` on every world size
  (one replica when single-process), so the permutation depends only on seed and epoch. Rank ``r`` takes
  positions ``r, r+W, ...``, so with a per-rank batch of ``B/W`` the W ranks of one step together see exactly
  the examples of the single-process global batch of size ``B``.
- *Mid-epoch resume without repeating or skipping data.* :class:`ResumableDataLoader` implements the
  ``state_dict``/``load_state_dict`` protocol Lightning saves into checkpoints and, on restore, starts the
  sampler after the batches already trained on.

Evaluation pads each rank's shard to equal length (so DDP collectives stay in lockstep) with rows whose
label is :data:`~lmshrink.metrics.groups.IGNORE_INDEX`: metrics and loss skip them, so nothing is counted twice.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmshrink.metrics.groups import IGNORE_INDEX


class GroupedTextDataset(Dataset):
    """Pre-tokenized examples with a label and a group-membership row each.

    Indices ``>= len(self)`` return a padding copy of row ``index - len(self)`` with an ignored label.
    """

    def __init__(self, encodings: dict[str, list[list[int]]], labels: np.ndarray, groups: np.ndarray) -> None:
        self.encodings = encodings
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.groups = torch.as_tensor(groups, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.labels)

    def label_bytes(self) -> bytes:
        """The labels as bytes, for the split's fingerprint."""
        return self.labels.numpy().tobytes()

    def __getitem__(self, index: int) -> dict[str, Any]:
        padding = index >= len(self)
        row = index - len(self) if padding else index
        item = {key: values[row] for key, values in self.encodings.items()}
        item["labels"] = IGNORE_INDEX if padding else int(self.labels[row])
        item["groups"] = self.groups[row]
        item["index"] = row  # position in the split: the key of per-example caches (teacher logits)
        return item


class TokenPaddingCollator:
    """Pads token fields per batch (dynamic padding) and stacks labels, group membership and row index."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = torch.tensor([item.pop("labels") for item in items], dtype=torch.long)
        groups = torch.stack([item.pop("groups") for item in items])
        index = torch.tensor([item.pop("index") for item in items], dtype=torch.long)
        batch = dict(self.tokenizer.pad(items, return_tensors="pt"))
        batch["labels"] = labels
        batch["groups"] = groups
        batch["index"] = index
        return batch


class ResumableTrainSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by seed + epoch, no duplicated tail) that can start mid-epoch.

    Being a ``DistributedSampler``, Lightning keeps it instead of injecting its own. With ``lengths`` (token length
    per example) the epoch's order is Hugging Face's length-grouped one (``get_length_grouped_indices``: the
    seeded permutation cut into mega-batches of 50 global batches (fewer when the split holds fewer than 200),
    each sorted longest first), from which rank
    ``r`` takes positions ``r, r+W, ...`` as before: the ranks of one step still hold the single-process batch.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, lengths: list[int] | None = None,
                 global_batch_size: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        if lengths is not None and (len(lengths) != len(dataset) or not global_batch_size):
            raise ValueError("length grouping needs one length per example and the global batch size")
        self.lengths, self.global_batch_size = lengths, global_batch_size
        self.start_index = 0

    def __iter__(self) -> Iterator[int]:
        if self.lengths is None:
            indices = list(super().__iter__())
        else:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)  # as DistributedSampler seeds its permutation
            order = get_length_grouped_indices(self.lengths, self.global_batch_size, generator=generator)
            indices = order[self.rank : self.total_size : self.num_replicas]
        start, self.start_index = self.start_index, 0
        return iter(indices[start:])


class EvalShardSampler(DistributedSampler):
    """Unshuffled shards of equal length; the shortfall is filled with padding indices.

    With ``lengths`` (token length per example) the examples go longest first, so that each batch holds
    examples of similar length and dynamic padding wastes little: on StereoSet's test split (batch 128) the
    padded tokens drop from 66,800 to 36,488 for 27,918 real ones. Evaluation metrics are sums over examples
    (and per-example caches are keyed by ``index``), so the order changes no number. Longest first also makes an
    out-of-memory batch fail at once. Without ``lengths``: the split's order.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, lengths: list[int] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        if lengths is not None and len(lengths) != len(dataset):
            raise ValueError(f"{len(lengths)} lengths for {len(dataset)} examples")
        self.order = (list(range(len(dataset))) if lengths is None
                      else sorted(range(len(dataset)), key=lambda row: -lengths[row]))  # stable: ties keep order

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)
        padded = self.order + [size + i for i in range(len(self) * self.num_replicas - size)]
        return iter(padded[self.rank :: self.num_replicas])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position within the epoch is saved in and restored from checkpoints.

    Lightning (``fit_loop.on_save_checkpoint``) stores ``state_dict()`` of every loader implementing it
    and calls ``load_state_dict`` before the resumed epoch. The position saved is the number of batches
    *trained on*, given by ``trained_batches`` (the trainer's processed-batch count): a checkpoint written
    on an exception mid-step must not count the batch that was yielded but never finished. Without it,
    the count of yielded batches is used (right for checkpoints written between steps).
    """

    sampler: ResumableTrainSampler

    def __init__(self, *args, trained_batches: Callable[[], int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableTrainSampler):
            raise TypeError("ResumableDataLoader needs a ResumableTrainSampler")
        self.trained_batches = trained_batches
        self._batches_yielded = 0
        self._restored: dict[str, int] | None = None

    def state_dict(self) -> dict[str, int]:
        done = self.trained_batches() if self.trained_batches is not None else self._batches_yielded
        return {"epoch": self.sampler.epoch, "batches_yielded": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._restored = dict(state)

    def __iter__(self):
        # A generator, so that the skip is decided when iteration starts, after Lightning's set_epoch.
        skip = 0
        if self._restored is not None:
            restored, self._restored = self._restored, None
            if restored["epoch"] == self.sampler.epoch and restored["batches_yielded"] < len(self):
                skip = restored["batches_yielded"]
        self.sampler.start_index = skip * self.batch_size
        self._batches_yielded = skip
        for batch in super().__iter__():
            self._batches_yielded += 1
            yield batch


def mean_length(dataset) -> float:
    """Mean token length of a split (a dataset of dicts with ``input_ids``), in float64."""
    lengths = [len(dataset[index]["input_ids"]) for index in range(len(dataset))]
    if not lengths:
        raise ValueError("cannot take the mean length of an empty split")
    return float(torch.tensor(lengths, dtype=torch.float64).mean())
