"""Checking a command's options without running it (the study checks every stage so before the first runs), and
jsonargparse's long messages cut to the one line that matters."""

from __future__ import annotations

import re

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule

from lmshrink.cli.lightning_cli import LmshrinkCLI, build_option_objects
from lmshrink.errors import OptionError


class _ParseOnly(LmshrinkCLI):
    """The ``train.py`` parser without instantiating or running anything: checks a command's options."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass

    def _set_seed(self) -> None:
        pass


def concise_parse_error(exc: BaseException) -> str:
    """jsonargparse's message for a bad option, without the Union listings around the one line that matters:
    ``--data.group_scheme: Expected a typing.Literal['civilcomments', ...]; got 'civil'``."""
    text = " ".join(str(exc).split())
    keys = re.findall(r'Parser key "([^"]+)"', text)
    errors = text.split("Errors: - ")
    message = errors[-1] if len(errors) > 1 else text
    tails = r" - Expected a <class 'NoneType'>| Given value type:| - (?:Problem with given class_path )?'[\w.]+': "
    message = re.split(tails, message)[0]
    message = re.sub(r"^.*Parser key \"[^\"]+\": ", "", message).replace("Problem with given class_path ", "")
    given = re.findall(r"NestedArg\(key='[^']*', val=('[^']*')\)", text)
    if given and "Got value" not in message and "is not accepted" not in message:
        message += f"; got {given[-1]}"
    if keys and keys[-1].endswith("method") and "Expected a dot import path string" in message:
        message += "; a pruning method here is one of KPrune, Kwon, L1Heads, L1Unstructured (lmshrink.pruning.methods)"
    text = (f"--{'.'.join(keys)}: " if keys else "") + message
    return text[:600] + ("..." if len(text) > 600 else "")


def instantiate_datamodule(config: Namespace) -> LightningDataModule:
    """The datamodule of a parsed config, alone (no model is loaded)."""
    import importlib

    module_name, class_name = config.data.class_path.rsplit(".", 1)
    data_class = getattr(importlib.import_module(module_name), class_name)
    return data_class(**config.data.init_args.as_dict())


def check_args(subcommand: str, args: list[str]) -> Namespace:
    """Parse ``train.py <subcommand> <args>`` as the command line would (unknown options, types, choices, the
    configs' existence), loading nothing, and return the parsed config; a mistake raises :class:`OptionError`
    with jsonargparse's message."""
    import warnings

    from jsonargparse import ArgumentError

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # called inside another CLI
            cli = _ParseOnly(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                             save_config_callback=None, seed_everything_default=42, auto_configure_optimizers=False,
                             parser_kwargs={"exit_on_error": False}, args=[subcommand, *args])
    except (ArgumentError, SystemExit) as exc:
        raise OptionError(concise_parse_error(exc)) from None
    config = cli.config[subcommand]
    build_option_objects(config.model)
    return config

