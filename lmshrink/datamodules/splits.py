"""``SplitsDataModule``: what every lmshrink datamodule does once its train/val/test splits are tokenized.

Subclasses read and check their data in ``setup`` and set ``self.datasets`` (split name -> dataset; a
:class:`LazySplits` tokenizes each split the first time it is read) and ``self.tokenizer``; this base provides the
loaders (resumable mid-epoch training, DDP-exact evaluation shards: see :mod:`lmshrink.data.loading`), their
checkpoint state, and the public API modules, the study and the benchmarks use (split sizes, token lengths, fixed
seeded samples, fingerprints). Their hyperparameters must include ``batch_size``, ``eval_batch_size``,
``num_workers``, ``split_seed`` and ``group_by_length``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lmshrink.data.loading import (
    EvalShardSampler,
    ResumableDataLoader,
    ResumableTrainSampler,
    TokenPaddingCollator,
    mean_length,
)
from lmshrink.errors import OptionError
from lmshrink.data.pruning_sample import draw_sample, sample_batches
from lmshrink.seeding import run_seed


class LazySplits(Mapping):
    """Split name -> dataset, each built (tokenized) the first time it is read. An evaluation reads the test split
    only, and tokenizing the others was most of its data set-up (StereoSet: 0.6 s of tokenizing, 90 % of it the
    training split, in every one of a study's evaluations). Every check of the data runs before, on the whole table."""

    def __init__(self, names: Iterable[str], build: Callable[[str], object]) -> None:
        self._names, self._build, self._built = tuple(names), build, {}

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class SplitsDataModule(LightningDataModule):
    """Loaders, loader state and the public split API over ``self.datasets`` (filled by the subclass's setup)."""

    task = "sequence"
    """``sequence`` (one label per example) or ``token`` (one tag per word): which metrics and heads apply."""

    label_names: list[str] = []
    """Class names in id order, when known before the data is read (checked against the models' ``id2label``)."""

    def __init__(self) -> None:
        super().__init__()
        self.datasets: Mapping = {}
        self.tokenizer = None
        self.group_names: list[str] = []
        self._train_loader: ResumableDataLoader | None = None
        self._pending_loader_state: dict | None = None

    def _check_numbers(self) -> None:
        """Numeric options (batch sizes, lengths, fractions) are checked at construction, before any data loads."""
        hp = self.hparams
        rules = {"batch_size": hp.batch_size >= 1, "eval_batch_size": hp.eval_batch_size >= 1,
                 "max_length": hp.max_length >= 2, "num_workers": hp.num_workers >= 0, "num_labels": hp.num_labels >= 2,
                 "val_fraction": 0 < hp.val_fraction < 1, "test_fraction": 0 < hp.test_fraction < 1}
        limits = {"batch_size": ">= 1", "eval_batch_size": ">= 1", "max_length": ">= 2 (a token and [SEP])",
                  "num_workers": ">= 0", "num_labels": ">= 2", "val_fraction": "in (0, 1)", "test_fraction": "in (0, 1)"}
        for option, ok in rules.items():
            if not ok:
                raise OptionError(f"--data.{option}={getattr(hp, option)} must be {limits[option]}")
        if hp.val_fraction + hp.test_fraction >= 1:
            raise OptionError(f"--data.val_fraction + --data.test_fraction = {hp.val_fraction + hp.test_fraction} leaves "
                              f"no training rows; keep the sum below 1")

    def collator(self):
        """Pads a list of dataset items into a batch (dynamic padding)."""
        return TokenPaddingCollator(self.tokenizer)

    def split_fingerprint(self, split: str) -> str:
        """sha256 (16 hex digits) of a split's token ids, labels and group memberships: two evaluations with the
        same fingerprint saw the same examples (the study refuses to compare models across different ones)."""
        dataset = self.datasets[split]
        digest = hashlib.sha256()
        for ids in dataset.encodings["input_ids"]:
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        digest.update(dataset.label_bytes())
        digest.update(dataset.groups.numpy().tobytes())
        digest.update("|".join(self.group_names).encode())
        return digest.hexdigest()[:16]

    # ----------------------------------------------------------- what modules and benchmarks may ask (public API)
    def split_size(self, split: str) -> int:
        """Number of examples of a split (``train``, ``val``, ``test``)."""
        return len(self.datasets[split])

    def token_lengths(self, split: str) -> list[int]:
        """Token length of every example of a split, in order (sample sizes in tokens, FLOPs at length s)."""
        return [len(ids) for ids in self.datasets[split].encodings["input_ids"]]

    def mean_length(self, split: str) -> float:
        """Mean token length of a split: the s of the pruning spec's FLOPs model (§1.2 uses the dev split's)."""
        return mean_length(self.datasets[split])

    def rows_as_batches(self, split: str, rows, batch_size: int, keys: list[str] | None = None) -> list[dict]:
        """The given rows of a split, in that order, padded into batches (only ``keys`` when given): a fixed,
        seeded sample such as pruning's, identical on every run and rank."""
        keys = keys if keys is not None else list(self.datasets[split][0]) + ["index"]
        return sample_batches(self.datasets[split], rows, self.collator(), batch_size, keys)

    def seeded_sample(self, split: str, count: int, seed: int, batch_size: int, keys: list[str]) -> list[dict]:
        """``count`` rows of a split drawn with ``seed`` (:func:`~lmshrink.data.pruning_sample.draw_sample`), padded
        into batches in a fixed order: the sample pruning scores and static quantization calibrates on, identical
        on every run and rank."""
        lengths = self.token_lengths(split)
        return self.rows_as_batches(split, draw_sample(lengths, min(count, len(lengths)), seed), batch_size, keys)

    def ordered_loader(self, split: str, batch_size: int) -> DataLoader:
        """The whole split in order, unsharded (every rank sees every example), e.g. to cache teacher outputs."""
        return DataLoader(self.datasets[split], batch_size=batch_size, collate_fn=self.collator())

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        world_size, rank = self._world()
        if hp.batch_size % world_size:
            raise OptionError(f"--data.batch_size={hp.batch_size} is the global batch; it must divide by the "
                              f"{world_size} processes")
        # Shuffle with the run's seed (set by seed_everything), so that seeds of a study differ in data order.
        shuffle_seed = run_seed(default=hp.split_seed)
        lengths = self.token_lengths("train") if hp.group_by_length else None
        sampler = ResumableTrainSampler(self.datasets["train"], world_size, rank, seed=shuffle_seed,
                                        lengths=lengths, global_batch_size=hp.batch_size)
        self._train_loader = ResumableDataLoader(
            self.datasets["train"], batch_size=hp.batch_size // world_size, sampler=sampler, drop_last=True,
            collate_fn=self.collator(), num_workers=hp.num_workers,
            trained_batches=self._trained_batches_this_epoch,
        )
        if self._pending_loader_state is not None:
            self._train_loader.load_state_dict(self._pending_loader_state)
            self._pending_loader_state = None
        return self._train_loader

    # The loader position travels in the datamodule's checkpoint state. Lightning also saves stateful
    # loaders itself, but it never restores them when `estimated_stepping_batches` (used by the LR
    # schedule) built the loader before the checkpoint was loaded; the datamodule hooks always run.
    def state_dict(self) -> dict:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        loader_state = state_dict.get("train_loader")
        if loader_state is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(loader_state)
        else:
            self._pending_loader_state = loader_state

    def _trained_batches_this_epoch(self) -> int:
        # `processed` counts batches whose step finished (`ready` also counts one interrupted mid-step).
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _eval_dataloader(self, split: str) -> DataLoader:
        world_size, rank = self._world()
        dataset = self.datasets[split]
        return DataLoader(
            dataset, batch_size=self.hparams.eval_batch_size,
            sampler=EvalShardSampler(dataset, world_size, rank, lengths=self.token_lengths(split)),
            collate_fn=self.collator(), num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")
