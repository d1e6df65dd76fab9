"""Read a user's CSV / JSONL / parquet file with `datasets` and check it before any training starts."""

from __future__ import annotations

from pathlib import Path

import datasets
import pandas as pd

BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def read_table(path: str | Path, option: str) -> pd.DataFrame:
    """Load a whole table into memory. ``option`` is the config option that named the file (for errors)."""
    path = Path(path).expanduser()
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"{option}={str(path)!r}: unsupported file type {path.suffix!r}; use one of {sorted(BUILDERS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{option}={str(path)!r}: file does not exist")
    dataset = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True)
    frame = dataset.to_pandas()
    if len(frame) == 0:
        raise ValueError(f"{path}: the file has no rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"{source}: no column {missing[0]!r}; columns are {sorted(map(str, frame.columns))}")


def check_text(frame: pd.DataFrame, column: str, source: str) -> None:
    """Text must be a non-empty string on every row: a NaN silently becomes the string 'nan' otherwise."""
    values = frame[column]
    bad = values.isna() | ~values.map(lambda value: isinstance(value, str) and value.strip() != "")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"{source}: column {column!r} row {row} has no text ({values.iloc[row]!r}); "
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
        raise ValueError(f"{source}: column {column!r} row {row} has no label")
    if threshold is not None:
        return (values.astype(float) >= threshold).astype("int64").to_numpy()
    is_text = pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)
    if is_text and label_names is not None:
        index = {name: i for i, name in enumerate(label_names)}
        unknown = ~values.astype(str).isin(index)
        if unknown.any():
            row = int(unknown.to_numpy().nonzero()[0][0])
            raise ValueError(
                f"{source}: column {column!r} row {row} has label {values.iloc[row]!r}, not one of {label_names}"
            )
        return values.astype(str).map(index).astype("int64").to_numpy()
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != numeric.round()) | (numeric < 0) | (numeric >= num_labels)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"{source}: column {column!r} row {row} has label {values.iloc[row]!r}, outside num_labels={num_labels} "
            f"(labels must be integers 0..{num_labels - 1}, or set label_names for string labels)"
        )
    return numeric.astype("int64").to_numpy()
