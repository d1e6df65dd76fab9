"""The one reader of text files (tables, CoNLL, JSON, JSONL, YAML): UTF-8 with or without a byte-order mark.

A BOM left in place makes the first line's first word ``\\ufeff-DOCSTART-`` (a one-word sentence, every document
group shifted by one) or the first CSV column ``\\ufefftext``; bytes that are not UTF-8 fail naming the file and the
1-based line, not with a decoder's traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmshrink.errors import InputFileError


def decode_utf8(path: str | Path, data: bytes) -> str:
    """``data`` as text, a leading BOM stripped; a byte that is not UTF-8 is named with its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputFileError(f"{path}: line {line} (1-based) is not UTF-8 (byte 0x{data[exc.start]:02x}); "
                             f"save the file as UTF-8") from None


def read_lines(path: str | Path) -> list[str]:
    """The file's lines (without line ends), decoded by :func:`decode_utf8`."""
    return decode_utf8(path, Path(path).read_bytes()).splitlines()


def read_json(path: str | Path, expected: type = dict) -> dict | list:
    """A JSON file whose top level is ``expected`` (an object, or a list): a truncated file, invalid JSON or another
    top-level type is named with the file (and line), not met later as a ``KeyError`` or a traceback."""
    text = decode_utf8(path, Path(path).read_bytes())
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = " (truncated?)" if exc.pos >= len(text.rstrip()) else ""
        raise InputFileError(f"{path}: line {exc.lineno} is not valid JSON{truncated} ({exc.msg})") from None
    if not isinstance(value, expected):
        raise InputFileError(f"{path}: expected a JSON {_JSON_NAMES[expected]} at the top level, found a "
                             f"{_JSON_NAMES.get(type(value), type(value).__name__)}")
    return value


def json_objects(path: str | Path, lines: list[str]) -> list[tuple[int, dict]]:
    """``(1-based line number, object)`` for each JSON line of ``lines``, blank lines skipped; a line that does not
    parse (a truncated last line is what an interrupted write leaves) or holds no object is named with its number."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path}: line {number} (1-based) is not valid JSON ({exc.msg} at column "
                                 f"{exc.colno})") from None
        if not isinstance(record, dict):
            raise InputFileError(f"{path}: line {number} (1-based) is a JSON "
                                 f"{_JSON_NAMES.get(type(record), 'value')}, expected an object")
        records.append((number, record))
    return records


def read_json_lines(path: str | Path) -> list[dict]:
    """The objects of a JSON-lines file, read through :func:`read_lines` and :func:`json_objects`."""
    return [record for _, record in json_objects(path, read_lines(path))]


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}
