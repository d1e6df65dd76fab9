"""The configs lmshrink ships, addressable by name from any directory (as torchtune's ``tune ls`` / ``tune cp``).

In a checkout they are the repository's ``configs/``; an installed wheel carries the same files as package data
(``lmshrink/_configs``, a link to ``configs/`` in the repository). A config is named by its path (``configs/teacher/
stereoset_minilm.yaml`` still works from the checkout) or by its name under ``configs/`` with or without ``.yaml``
(``teacher/stereoset_minilm``). A path that exists always wins, so a user's own file is never shadowed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmshrink.errors import MissingInputError, OutputExistsError

PACKAGED = Path(__file__).resolve().parent / "_configs"
CHECKOUT = Path(__file__).resolve().parents[1] / "configs"


def configs_root() -> Path:
    """Where the shipped configs are: the wheel's package data, else the checkout's ``configs/``."""
    return PACKAGED if PACKAGED.is_dir() else CHECKOUT


def resolve_config(value: str) -> str:
    """``value`` itself when it is an existing file; else the shipped config it names (``teacher/stereoset_minilm``,
    ``configs/teacher/stereoset_minilm.yaml``); else ``value`` unchanged (the caller reports the missing file)."""
    if Path(value).expanduser().exists():
        return value
    name = value.removeprefix("configs/")
    for candidate in (name, f"{name}.yaml"):
        path = configs_root() / candidate
        if path.is_file():
            return str(path)
    return value


def list_configs() -> list[str]:
    """Every shipped config by name (``teacher/stereoset_minilm``), sorted."""
    root = configs_root()
    return sorted(str(path.relative_to(root).with_suffix("")) for path in root.rglob("*.yaml"))


def copy_config(name: str, destination: str) -> Path:
    """Copy a shipped config to edit it (``destination`` a new file, or a directory to put it in); never
    overwrites."""
    source = Path(resolve_config(name))
    if not source.is_file() or not source.resolve().is_relative_to(configs_root().resolve()):
        raise MissingInputError(f"configs cp: {name!r} is not a shipped config; `lmshrink configs` lists them")
    target = Path(destination)
    if target.is_dir() or destination.endswith(("/", "\\")):  # a directory, existing or to be made
        target = target / source.name
    if target.exists():
        raise OutputExistsError(f"configs cp: {target} exists; nothing was overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def with_named_configs(argv: list[str]) -> list[str]:
    """``--config NAME`` / ``--config=NAME`` / ``-c NAME`` with NAME resolved by :func:`resolve_config` (the CLI's
    arguments, before LightningCLI parses them); a NAME that is neither a file nor a shipped config is refused."""
    resolved, take_next = [], False
    for arg in argv:
        if take_next:
            arg, take_next = _existing_config(arg), False
        elif arg in ("--config", "-c"):
            take_next = True
        elif arg.startswith("--config="):
            arg = "--config=" + _existing_config(arg.split("=", 1)[1])
        resolved.append(arg)
    return resolved


def _existing_config(value: str) -> str:
    if value.lstrip().startswith("{") or "\n" in value:  # jsonargparse also takes a config written inline
        return value
    path = resolve_config(value)
    if not Path(path).expanduser().is_file():
        raise MissingInputError(f"--config {value}: no such file, nor a shipped config (`lmshrink configs` lists "
                                f"them)")
    return path
