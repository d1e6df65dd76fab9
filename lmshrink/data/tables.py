"""Read a user's table (CSV / JSONL / parquet file, ``save_to_disk`` directory or hub dataset) and check it
before any training starts.

Every problem is one error naming the file and, where there is one, the 1-based line or row: an empty file,
a header without rows, bytes that are not UTF-8, a JSON line that does not parse, a CSV row with more or
fewer fields than its header. The ``datasets`` library reads the file once these checks pass.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import datasets
import pandas as pd

from lmshrink.data.text_files import decode_utf8, json_objects
from lmshrink.errors import InputFileError, MissingInputError

BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def show(value) -> str:
    """A cell as the user wrote it: ``5``, ``'x'``, ``nan`` (never ``np.int64(5)``)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    return repr(value)


def _check_csv(path: Path, text: str) -> None:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            raise InputFileError(f"{path}: the file has no header line")
        rows = 0
        for record in reader:
            if not record:  # a blank line
                continue
            rows += 1
            if len(record) != len(header):
                raise InputFileError(f"{path}: line {reader.line_num} (1-based) has {len(record)} fields, the header "
                                     f"has {len(header)} ({', '.join(header)}); quote fields that contain commas")
    except csv.Error as exc:
        raise InputFileError(f"{path}: line {reader.line_num} (1-based) is not valid CSV ({exc})") from None
    if rows == 0:
        raise InputFileError(f"{path}: the file has a header ({', '.join(header)}) but no rows")


def _check_json_lines(path: Path, text: str) -> None:
    if path.suffix.lower() == ".json":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # JSON lines in a .json file: checked line by line below
        if isinstance(whole, list) and not all(isinstance(row, dict) for row in whole):
            index = next(i for i, row in enumerate(whole) if not isinstance(row, dict))
            raise InputFileError(f"{path}: a JSON array of rows must hold objects (one key per column); item {index} "
                                 f"(0-based) is {show(whole[index])}")
        if isinstance(whole, (list, dict)):
            return
    if not json_objects(path, text.splitlines()):
        raise InputFileError(f"{path}: the file has no rows")


def read_table(path: str | Path, option: str) -> pd.DataFrame:
    """Load a whole file into memory after checking it. ``option`` is the config option that named the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_saved_dataset(path, option)
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise InputFileError(f"{option}={str(path)!r}: unsupported file type {path.suffix!r}; use one of "
                             f"{sorted(BUILDERS)}, a save_to_disk directory or a hub dataset id")
    if not path.is_file():
        raise MissingInputError(f"{option}={str(path)!r}: file does not exist")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: the file is empty (0 bytes)")
    if builder != "parquet":
        text = decode_utf8(path, path.read_bytes())
        (_check_csv if builder == "csv" else _check_json_lines)(path, text)
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True)
    except Exception as exc:  # what the checks above do not catch (e.g. a corrupt parquet file)
        raise InputFileError(f"{path}: cannot be read as {builder} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return _non_empty(dataset.to_pandas(), path)


def _non_empty(frame: pd.DataFrame, source) -> pd.DataFrame:
    if len(frame) == 0:
        raise InputFileError(f"{source}: the file has no rows")
    return frame


def read_saved_dataset(path: Path, option: str, split: str | None = None) -> pd.DataFrame:
    """A ``Dataset.save_to_disk`` directory (or one split of a saved ``DatasetDict``) as a frame."""
    try:
        saved = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as exc:
        raise InputFileError(f"{option}={str(path)!r}: not a datasets save_to_disk directory "
                             f"({type(exc).__name__})") from None
    if isinstance(saved, datasets.DatasetDict):
        if split is None or split not in saved:
            raise InputFileError(f"{option}={str(path)!r} holds splits {sorted(saved)}; name the one to read "
                                 f"(--data.dataset_splits)")
        saved = saved[split]
    return _non_empty(saved.to_pandas(), f"{path}" + (f" split {split!r}" if split else ""))


def read_hub_split(dataset_id: str, config_name: str | None, split: str, option: str) -> pd.DataFrame:
    """One split of a hub dataset through the ``datasets`` cache (offline with ``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    try:
        dataset = datasets.load_dataset(dataset_id, config_name, split=split)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise InputFileError(f"{option}={dataset_id!r}: no split {split!r} ({str(exc).splitlines()[0]}); set "
                                 f"--data.dataset_splits") from None
        raise InputFileError(f"{option}={dataset_id!r}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        offline = " while offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        raise MissingInputError(
            f"{option}={dataset_id!r}: could not load the hub dataset{offline} ({type(exc).__name__}); with network, "
            f"cache it once: python -c \"import datasets; datasets.load_dataset({dataset_id!r}, {config_name!r})\""
        ) from None
    return _non_empty(dataset.to_pandas(), f"{dataset_id} split {split!r}")


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputFileError(f"{source}: no column {missing[0]!r}; columns are {sorted(map(str, frame.columns))}")


def check_text(frame: pd.DataFrame, column: str, source: str) -> None:
    """Text must be a non-empty string on every row: a NaN silently becomes the string 'nan' otherwise."""
    values = frame[column]
    bad = values.isna() | ~values.map(lambda value: isinstance(value, str) and value.strip() != "")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise InputFileError(
            f"{source}: column {column!r} row {row + 1} (1-based) has no text ({show(values.iloc[row])}); "
            f"{int(bad.sum())} row(s) affected"
        )


def encode_labels(
    frame: pd.DataFrame,
    column: str,
    num_labels: int,
    source: str,
    label_names: list[str] | None = None,
    threshold: float | None = None,
):
    """Map a label column to integer ids in ``[0, num_labels)``.

    String labels need ``label_names`` (their order defines the ids; integer labels keep their value); a float score (CivilComments
    ``toxicity``) is binarised with ``threshold``. Anything outside the range fails naming the row.
    """
    values = frame[column]
    if values.isna().any():
        row = int(values.isna().to_numpy().nonzero()[0][0])
        raise InputFileError(f"{source}: column {column!r} row {row + 1} (1-based) has no label")
    if threshold is not None:
        return (values.astype(float) >= threshold).astype("int64").to_numpy()
    is_text = pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)
    if is_text and label_names is not None:
        index = {name: i for i, name in enumerate(label_names)}
        unknown = ~values.astype(str).isin(index)
        if unknown.any():
            row = int(unknown.to_numpy().nonzero()[0][0])
            raise InputFileError(
                f"{source}: column {column!r} row {row + 1} (1-based) has label {show(values.iloc[row])}, not one of "
                f"{label_names}"
            )
        return values.astype(str).map(index).astype("int64").to_numpy()
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != numeric.round()) | (numeric < 0) | (numeric >= num_labels)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise InputFileError(
            f"{source}: column {column!r} row {row + 1} (1-based) has label {show(values.iloc[row])}, outside "
            f"num_labels={num_labels} (labels must be integers 0..{num_labels - 1}, or set label_names for string "
            f"labels)"
        )
    return numeric.astype("int64").to_numpy()
