"""File naming that never overwrites: a run's outputs accumulate instead of replacing each other."""

from __future__ import annotations

import json
from pathlib import Path


def free_path(directory: str | Path, stem: str, suffix: str, tag: str = "") -> Path:
    """``directory/stem.suffix`` if free, else the first free ``stem.<tag>-N.suffix`` (``stem-N`` without tag)."""
    directory = Path(directory)
    path, n = directory / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = directory / (f"{stem}.{tag}-{n}{suffix}" if tag else f"{stem}-{n}{suffix}")
    return path


def write_new_json(directory: str | Path, stem: str, record: dict, default=None) -> Path:
    """Write ``record`` to a new ``directory/stem[-N].json`` (the directory is created; nothing is overwritten).
    ``default`` is json's fallback for objects it cannot serialise (e.g. ``str``)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = free_path(directory, stem, ".json")
    path.write_text(json.dumps(record, indent=2, default=default))
    return path


def refuse_a_file(directory: str | Path | None, option: str) -> None:
    """Refuse, before any work, a directory option that names an existing file (a cache or output directory
    created at the end of a run would otherwise fail there, after the work, with a traceback)."""
    if directory and Path(directory).exists() and not Path(directory).is_dir():
        raise FileExistsError(f"{option}={str(directory)!r} is a file, not a directory; name a new directory "
                              f"(nothing was overwritten)")


def refuse_non_empty(directory: str | Path | None, option: str) -> None:
    """Refuse, before anything is written, an output directory that already holds files, or is a file."""
    refuse_a_file(directory, option)
    if not directory or not Path(directory).exists():
        return
    if any(Path(directory).iterdir()):
        raise FileExistsError(f"{option}={str(directory)!r} is not empty; nothing was overwritten")
