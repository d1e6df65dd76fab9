"""File naming that never overwrites: a run's outputs accumulate instead of replacing each other."""

from __future__ import annotations

from pathlib import Path


def free_path(directory: str | Path, stem: str, suffix: str, tag: str = "") -> Path:
    """``directory/stem.suffix`` if free, else the first free ``stem.<tag>-N.suffix`` (``stem-N`` without tag)."""
    directory = Path(directory)
    path, n = directory / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = directory / (f"{stem}.{tag}-{n}{suffix}" if tag else f"{stem}-{n}{suffix}")
    return path


def refuse_non_empty(directory: str | Path | None, option: str) -> None:
    """Refuse, before anything is written, an output directory that already holds files."""
    if directory and Path(directory).exists() and any(Path(directory).iterdir()):
        raise FileExistsError(f"{option}={str(directory)!r} is not empty; nothing was overwritten")
