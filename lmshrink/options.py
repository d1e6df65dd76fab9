"""Options a choice ignores are refused by name (litgpt's ``validate_args``), never silently dropped.

An option counts as *set* when its value differs from the default in the class's ``__init__``: that is what a
config or command line changed.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping


def init_defaults(cls: type) -> dict[str, object]:
    """``{option: default}`` of a class's ``__init__``."""
    return {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()}


def set_options(cls: type, values: Mapping[str, object], names: Iterable[str]) -> list[str]:
    """Those of ``names`` whose value in ``values`` differs from the default of ``cls.__init__``, in order."""
    defaults = init_defaults(cls)
    return [name for name in names if values[name] != defaults[name]]


def as_settings(value, kind: type):
    """A settings group as its dataclass, from the dataclass, a dict (checkpoint hparams) or a parsed Namespace."""
    if isinstance(value, kind):
        return value
    return kind(**(value.as_dict() if hasattr(value, "as_dict") else dict(value)))
