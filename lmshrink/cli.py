"""The ``train.py`` command line: a ``LightningCLI`` with lmshrink's run-directory conventions.

One run = one directory, ``trainer.default_root_dir`` (e.g. ``runs/teacher_stereoset_minilm``):

- the W&B logger (offline unless the config says otherwise) writes there, and a ModelCheckpoint without
  ``dirpath`` writes to ``<run dir>/checkpoints``. Fixed paths are what make ``--ckpt_path last`` find
  the checkpoint of a killed run (W&B run ids are random, so Lightning's default path would not).
- Outputs of a module (an exported model) default to a folder of the run directory and are checked before the
  run starts; loading a checkpoint for evaluation never re-checks an output of training.
- A fresh ``fit`` refuses a run directory that already holds checkpoints or a config: pass
  ``--ckpt_path last`` to resume, or pick another ``--trainer.default_root_dir``. Nothing is overwritten.
- The resolved config is saved as ``config.yaml``; resumed and evaluation runs save theirs beside it
  under a new name (``config.fit-1.yaml``, ``config.test-1.yaml``, ...).
- The W&B run id is kept in ``<run dir>/wandb_run_id``: a resumed fit continues the same W&B run.
- ``fit`` ends by testing the best checkpoint (by ``val/worst_group_acc`` in the shipped configs), so
  the run directory always holds the held-out per-group table.
- A run that fails before its first training step removes what it wrote (config, W&B run, step-0
  checkpoints), so the same command can be re-run once the mistake is fixed.
- A user mistake ends with one ``error: ...`` line and exit code 2; a bug with its traceback
  (``LMSHRINK_DEBUG=1`` shows the traceback of user mistakes too).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lmshrink.datamodules.splits import SplitsDataModule
from lmshrink.errors import MissingInputError, OptionError, OutputExistsError, debug, message, user_error
from lmshrink.metrics.gate import GateFailure
from lmshrink.model_fit import check_against_data, check_checkpoint
from lmshrink.modules.base import LmshrinkModule
from lmshrink.paths import free_path, refuse_non_empty
from lmshrink.quiet import show_progress
from lmshrink.shipped_configs import with_named_configs

WANDB_ID_FILE = "wandb_run_id"
"""Holds the W&B run id of a run directory, so that ``--ckpt_path last`` continues the same W&B run."""

CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
"""``--ckpt_path`` values Lightning resolves itself; ``none`` says "evaluate the model as configured"."""


class NeverOverwriteConfig(SaveConfigCallback):
    """Saves the resolved config under the first free name instead of failing or overwriting."""

    saved_path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        if trainer.is_global_zero and log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            tag = getattr(stage, "value", stage)  # "fit", not "TrainerFn.FITTING"
            path = free_path(log_dir, "config", ".yaml", tag=tag)
            self.parser.save(self.config, str(path), skip_none=False, multifile=self.multifile)
            self.saved_path = path
        self.already_saved = True


def _class_name(entry) -> str:
    if isinstance(entry, Namespace):
        return str(entry.get("class_path", ""))
    return ""


def _loggers(trainer_config: Namespace) -> list:
    loggers = trainer_config.get("logger")
    return [logger for logger in (loggers if isinstance(loggers, list) else [loggers]) if _class_name(logger)]


def _fill_run_dirs(config: Namespace) -> None:
    """Point loggers whose ``save_dir`` is unset or ``.`` and ModelCheckpoints without ``dirpath`` at
    ``trainer.default_root_dir``; a W&B run without a name is named after that directory."""
    trainer = config.trainer
    root = trainer.get("default_root_dir") or os.getcwd()
    if Path(root).exists() and not Path(root).is_dir():
        raise OutputExistsError(f"--trainer.default_root_dir={str(root)!r} is a file, not a directory; name a new "
                                f"run directory (nothing was overwritten)")
    for logger in _loggers(trainer):
        if logger.init_args.get("save_dir") in (None, "."):
            logger.init_args.save_dir = str(root)
        if _class_name(logger).endswith("WandbLogger") and not logger.init_args.get("name"):
            logger.init_args.name = Path(root).resolve().name  # configs/logger/wandb.yaml names no run
    for callback in trainer.get("callbacks") or []:
        if _class_name(callback).endswith("ModelCheckpoint") and callback.init_args.get("dirpath") is None:
            callback.init_args.dirpath = str(Path(root) / "checkpoints")


def _checkpoint_dirs(config: Namespace) -> list[Path]:
    return [Path(callback.init_args.dirpath) for callback in config.trainer.get("callbacks") or []
            if _class_name(callback).endswith("ModelCheckpoint") and callback.init_args.get("dirpath")]


def given_ckpt_path(value) -> str | None:
    """``--ckpt_path`` as given, None when absent or ``none`` (evaluate the model as configured)."""
    return None if value is None or str(value).lower() == "none" else str(value)


def resolve_checkpoint(ckpt_path: str | None, checkpoint_dirs: list[Path]) -> Path | None:
    """The file ``--ckpt_path`` names (``last``: the ``last.ckpt`` of the run's checkpoint directories); None when
    none is given or Lightning resolves the keyword inside the run (``best``, ...). A missing file fails here,
    before any model is loaded or file written."""
    ckpt_path = given_ckpt_path(ckpt_path)
    if ckpt_path is None or ckpt_path in CKPT_KEYWORDS[1:]:
        return None
    if ckpt_path == "last":
        found = [directory / "last.ckpt" for directory in checkpoint_dirs if (directory / "last.ckpt").is_file()]
        if not found:
            where = ", ".join(str(directory) for directory in checkpoint_dirs) or "(no ModelCheckpoint configured)"
            raise MissingInputError(
                f"--ckpt_path last: no last.ckpt in {where}; nothing to resume (is --trainer.default_root_dir the "
                f"directory of the run you want to resume?)")
        return found[0]
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    return path


def _continue_wandb_run(config: Namespace, subcommand: str) -> None:
    """Resumed fits log to the W&B run of their directory (same id, ``resume="allow"``), fresh fits get a new id
    written to the directory by :meth:`LmshrinkCLI.before_fit`."""
    if subcommand != "fit":
        return
    root = Path(config.trainer.get("default_root_dir") or os.getcwd())
    for logger in _loggers(config.trainer):
        if not _class_name(logger).endswith("WandbLogger") or logger.init_args.get("id"):
            continue
        id_file = root / WANDB_ID_FILE
        if given_ckpt_path(config.get("ckpt_path")) is not None and id_file.is_file():
            logger.init_args.id = id_file.read_text().strip()
            logger["dict_kwargs"] = {**(logger.get("dict_kwargs") or {}), "resume": "allow"}
        else:
            from wandb.sdk.lib.runid import generate_id

            logger.init_args.id = generate_id()


def _add_console_callbacks(config: Namespace) -> None:
    """Plain progress lines instead of a tqdm bar when stdout is a file; a model summary without a 0-FLOPs line."""
    trainer = config.trainer
    callbacks = list(trainer.get("callbacks") or [])
    names = [_class_name(callback) for callback in callbacks]
    if (trainer.get("enable_progress_bar") is not False and not sys.stdout.isatty()
            and not any("Progress" in name for name in names)):
        callbacks.append(Namespace(class_path="lmshrink.callbacks.console.LineProgress",
                                   init_args=Namespace(every_n_steps=50, every_seconds=60.0)))
    if trainer.get("enable_model_summary") is not False and not any("ModelSummary" in name for name in names):
        callbacks.append(Namespace(class_path="lmshrink.callbacks.console.ParameterSummary",
                                   init_args=Namespace(max_depth=1)))
    trainer.callbacks = callbacks


def data_task(config: Namespace) -> str | None:
    """The task of the configured datamodule class (its ``task`` attribute), without instantiating it."""
    import importlib

    module_name, _, class_name = str(config.data.get("class_path") or "").rpartition(".")
    return getattr(getattr(importlib.import_module(module_name), class_name, None), "task", None) if module_name \
        else None


def refuse_to_overwrite(trainer: Trainer, ckpt_path: str | None) -> None:
    """A fresh fit must not write into the checkpoints or config of an earlier run."""
    if ckpt_path is not None or trainer.fast_dev_run:
        return
    used = [
        Path(callback.dirpath)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and any(Path(callback.dirpath).glob("*.ckpt"))
    ]
    config = Path(trainer.default_root_dir) / "config.yaml"
    if used or config.exists():
        where = used[0] if used else config
        raise OutputExistsError(
            f"{where} belongs to an earlier run. Resume it with --ckpt_path last, or start a new run with "
            f"another --trainer.default_root_dir (nothing was overwritten)"
        )


FREE_ON_RESUME = {"num_workers", "eval_batch_size", "export_dir", "student_save_dir", "save_dir", "teacher_cache_dir"}
"""Hyperparameters a resumed run may change without changing what it trains (speed and output places only)."""


def resume_mismatches(checkpoint: dict, model_hparams: dict, data_hparams: dict) -> dict[str, str]:
    """``{key: "--group.key: <checkpoint value> in the checkpoint, <config value> now"}`` for every hyperparameter
    that differs between the checkpoint being resumed and the config (torchtune's ``_update_recipe_state`` check),
    apart from :data:`FREE_ON_RESUME`."""
    differences = {}
    for group, saved, now in (("model", checkpoint.get("hyper_parameters") or {}, model_hparams),
                              ("data", checkpoint.get("datamodule_hyper_parameters") or {}, data_hparams)):
        for key in sorted(set(saved) | set(now)):
            if key not in FREE_ON_RESUME and not key.startswith("_") and saved.get(key) != now.get(key):
                differences[key] = f"--{group}.{key}: {saved.get(key)!r} in the checkpoint, {now.get(key)!r} now"
    return differences


class LmshrinkCLI(LightningCLI):
    """LightningCLI with lmshrink's run directories, checks before running and clean-up of failed starts."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.init_args.num_labels", "model.init_args.num_labels")
        parser.add_argument("--allow_resume_changes", type=list[str], default=[],
                            help="hyperparameters a resumed fit may change from its checkpoint, e.g. "
                                 "'[learning_rate]' (any other difference is refused)")

    def _parse_ckpt_path(self) -> None:
        """Lightning merges a given checkpoint's hyperparameters (and module class) into the config here. The file is
        read and checked first: a truncated file, a file that is no Lightning checkpoint, or one of another module
        class or task is one line naming ``--ckpt_path`` and what the file holds, not a traceback or a model
        silently replaced by the checkpoint's (whose task then contradicts the data)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = given_ckpt_path(self.config[subcommand].get("ckpt_path")) if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            from lmshrink.backbones import read_checkpoint

            config = self.config[subcommand]
            self._read_checkpoints = {ckpt_path: read_checkpoint(ckpt_path, "--ckpt_path")}
            check_checkpoint(self._read_checkpoints[ckpt_path], f"--ckpt_path {ckpt_path}",
                             config.model.get("class_path"), data_task(config))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        _fill_run_dirs(config)
        if self.subcommand:
            resolve_checkpoint(config.get("ckpt_path"), _checkpoint_dirs(config))
            _continue_wandb_run(config, self.subcommand)
        _add_console_callbacks(config)

    # ------------------------------------------------------------------------------------ checks before running
    def _ckpt_path(self) -> str | None:
        return given_ckpt_path(self.config[self.subcommand].get("ckpt_path"))

    def _check_outputs(self) -> None:
        """The module's outputs (an exported model) must not overwrite anything: checked before the run starts."""
        if self.trainer.fast_dev_run:  # a debug run exports nothing (see the modules' on_fit_end)
            return
        if not isinstance(self.model, LmshrinkModule):
            return
        outputs = self.model.output_dirs(self.trainer.default_root_dir, self.subcommand)
        resuming = self.subcommand == "fit" and self._ckpt_path() is not None
        for option, directory in outputs.items():
            if resuming and Path(directory).is_dir() and any(Path(directory).iterdir()):
                raise OutputExistsError(
                    f"--model.{option}={str(directory)!r} is not empty: the run being resumed already finished and "
                    f"wrote its model there, so there is nothing to resume (evaluate it with `train.py test`, or "
                    f"start a new run with another --trainer.default_root_dir); nothing was overwritten")
            refuse_non_empty(directory, f"--model.{option}")

    def _check_evaluable(self) -> None:
        said_nothing = self.config[self.subcommand].get("ckpt_path") is None  # `--ckpt_path none` is a choice
        if said_nothing and isinstance(self.model, LmshrinkModule) and self.model.untrained_head:
            raise OptionError(
                f"{self.subcommand} without --ckpt_path would evaluate {type(self.model).__name__}'s newly initialised "
                f"classifier head (model_path={self.model.hparams.get('model_path')!r} has none for this task). "
                f"Pass the "
                f"--ckpt_path of a fine-tuning run, a fine-tuned --model.model_path, or --ckpt_path none to evaluate "
                f"the untrained head on purpose")

    def _checkpoint(self) -> dict | None:
        """The checkpoint ``--ckpt_path`` names, read once and checked against this run's module (readable, of its
        task, with its weights' names and shapes) before any work; None when none is given."""
        directories = [Path(callback.dirpath) for callback in self.trainer.checkpoint_callbacks
                       if getattr(callback, "dirpath", None)]
        ckpt_path = resolve_checkpoint(self._ckpt_path(), directories)
        if ckpt_path is None:
            return None
        from lmshrink.backbones import read_checkpoint

        read = getattr(self, "_read_checkpoints", {})  # read at parse time when given as a file
        checkpoint = read.get(str(ckpt_path)) or read_checkpoint(ckpt_path, "--ckpt_path")
        if isinstance(self.model, LmshrinkModule):
            shapes = {name: tuple(value.shape) for name, value in self.model.state_dict().items()}
            check_checkpoint(checkpoint, f"--ckpt_path {self._ckpt_path()}", task=self.model.task, weights=shapes)
        return checkpoint

    def _check_resume(self) -> None:
        """A resume whose config changes the run (another model, teacher, temperature, data) is refused, naming
        the keys, unless ``--allow_resume_changes`` lists them."""
        checkpoint = self._checkpoint()
        if checkpoint is None:
            return
        data_hparams = dict(self.datamodule.hparams) if self.datamodule is not None else {}
        allowed = set(self.config[self.subcommand].get("allow_resume_changes") or [])
        differences = {key: text for key, text in resume_mismatches(checkpoint, dict(self.model.hparams),
                                                                    data_hparams).items() if key not in allowed}
        if differences:
            raise OptionError(f"--ckpt_path {self._ckpt_path()}: the config changes the run being resumed: "
                              f"{'; '.join(differences.values())}. Resume with the original values, or allow the "
                              f"change with --allow_resume_changes '[{','.join(differences)}]'")

    def _check_task(self) -> None:
        """A sequence classifier cannot learn from word tags (nor the reverse): refused before any work."""
        model_task = getattr(self.model, "task", None)
        data_task = getattr(self.datamodule, "task", None)
        if model_task is None or data_task is None or model_task == data_task:
            return
        data = f"{type(self.datamodule).__name__} is {data_task} classification"
        if "task" in self.model.hparams:
            raise OptionError(f"--model.task={model_task} but {data}; set --model.task={data_task}")
        raise OptionError(f"{type(self.model).__name__}: the model ({self.model.source_model}) is a {model_task} "
                          f"classifier, but {data}; give it a {data_task} classifier or the matching data")

    def _check_models_fit_data(self) -> None:
        """The trained models a module was given read this data: their class names and context fit it."""
        if isinstance(self.model, LmshrinkModule) and isinstance(self.datamodule, SplitsDataModule):
            models = {option: (value, network.config.to_dict())
                      for option, (value, network) in self.model.given_models().items()}
            check_against_data(models, self.datamodule.label_names, self.datamodule.hparams.max_length)

    def before_fit(self) -> None:
        self._check_task()
        self._check_models_fit_data()
        refuse_to_overwrite(self.trainer, self._ckpt_path())
        self._check_outputs()
        self._check_resume()
        if self.datamodule is not None:  # read and check the data before the W&B run starts (setup is cached:
            self.datamodule.setup("fit")  # the trainer's own call returns at once)
        root = Path(self.trainer.default_root_dir)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero and logger._wandb_init.get("id"):
                root.mkdir(parents=True, exist_ok=True)
                (root / WANDB_ID_FILE).write_text(logger._wandb_init["id"] + "\n")
        self._announce_wandb()

    def _announce_wandb(self) -> None:
        """Where the W&B run is written and how to watch it live (wandb's own lines are silenced)."""
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero:
                if logger._experiment is None and logger._wandb_init.get("anonymous", 0) is None:
                    del logger._wandb_init["anonymous"]  # Lightning passes None, which wandb 0.31 warns about
                run_dir = Path(_start_wandb_run(logger).dir).parent  # created now (removed again if the start fails)
                mode = "offline" if logger._offline else "online"
                print(f"[lmshrink] W&B run {logger.experiment.id} ({mode}): {run_dir}\n"
                      f"[lmshrink] watch it live: wandb leet {run_dir}", flush=True)

    def _before_evaluation(self) -> None:
        """``validate`` and ``test``: every check before the first batch."""
        self._check_task()
        self._check_models_fit_data()
        self._checkpoint()
        self._check_evaluable()
        self._check_outputs()
        self._announce_wandb()

    before_validate = before_test = _before_evaluation

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "ckpt_path" in kwargs:
            kwargs["ckpt_path"] = given_ckpt_path(kwargs["ckpt_path"])
        if subcommand in ("validate", "test"):
            kwargs["verbose"] = False  # GroupMetrics prints a readable table; Lightning's box cuts long keys
        return kwargs

    # ------------------------------------------------------------------------------------------------ running
    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.trainer.global_step == 0:
                try:
                    self._remove_outputs_of_failed_start(subcommand)
                except Exception as cleanup_error:  # never hide the error that stopped the run
                    logging.getLogger("lmshrink").warning(f"could not remove the failed run's files: {cleanup_error}")
            raise

    def _remove_outputs_of_failed_start(self, subcommand: str) -> None:
        """Nothing trained: remove this run's config, W&B run and step-0 checkpoints, which would block a re-run."""
        if not self.trainer.is_global_zero:
            return
        resumed = subcommand == "fit" and self._ckpt_path() is not None
        for callback in self.trainer.callbacks:
            if isinstance(callback, NeverOverwriteConfig) and callback.saved_path is not None:
                callback.saved_path.unlink(missing_ok=True)
            if isinstance(callback, ModelCheckpoint) and subcommand == "fit" and not resumed and callback.dirpath:
                for checkpoint in Path(callback.dirpath).glob("*.ckpt"):
                    checkpoint.unlink()
                _remove_if_empty(Path(callback.dirpath))
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                run_dir = Path(logger._experiment.dir).parent
                logger._experiment.finish(exit_code=1)
                shutil.rmtree(run_dir, ignore_errors=True)
                if not any(run_dir.parent.glob("*run-*")):  # only the failed run's debug logs are left
                    shutil.rmtree(run_dir.parent, ignore_errors=True)
        if subcommand == "fit" and not resumed:
            (Path(self.trainer.default_root_dir) / WANDB_ID_FILE).unlink(missing_ok=True)
        _remove_if_empty(Path(self.trainer.default_root_dir))

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)


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
    text = (f"--{'.'.join(keys)}: " if keys else "") + message
    return text[:600] + ("..." if len(text) > 600 else "")


def parsed_config(subcommand: str, args: list[str]) -> Namespace:
    """The config ``train.py <subcommand> <args>`` would run with (every ``--config`` and override applied),
    parsed and checked like :func:`check_args`, nothing instantiated."""
    return check_args(subcommand, args)


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
    import importlib
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
    module_name, class_name = config.model.class_path.rsplit(".", 1)
    check_options = getattr(getattr(importlib.import_module(module_name), class_name), "check_options", None)
    if check_options is not None:  # a module's refusals that need no model (options its method ignores)
        check_options(config.model.init_args)
    return config


def _start_wandb_run(logger: WandbLogger, attempts: int = 20, wait_seconds: float = 1.5):
    """The logger's W&B run, started now. A resume right after a kill or Ctrl-C can find the run id still held
    by the W&B service of the process that ended ("run ID ... is in use") for a few seconds: wait and retry
    (bounded) instead of failing the resume."""
    import time

    for _ in range(attempts):
        try:
            return logger.experiment
        except Exception as exc:
            if "is in use" not in str(exc):
                raise
            time.sleep(wait_seconds)
    raise OutputExistsError(
        f"W&B run {logger._wandb_init.get('id')} is still in use by another process after "
        f"{attempts * wait_seconds:.0f} s: is the run you resume still running? Stop it first, or start a new run "
        f"with another --trainer.default_root_dir")


def _remove_if_empty(directory: Path) -> None:
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def own_wandb_service() -> None:
    """Start this process's own W&B service instead of joining the one of a parent process (W&B passes it down
    in ``WANDB_SERVICE``): a run killed under a shared service keeps its id "in use" there for as long as the
    parent lives, and the resume of that run would be refused. Called by ``train.py`` at start."""
    os.environ.pop("WANDB_SERVICE", None)


def main(args: list[str] | None = None, exit_on_error: bool | None = None) -> LmshrinkCLI:
    """Run the CLI; a user mistake becomes ``error: ...`` on stderr and exit code 2 (see :mod:`lmshrink.errors`).

    ``exit_on_error`` defaults to True on the command line (``args`` None) and False for in-process callers,
    which then get the exception itself."""
    show_progress()
    if exit_on_error is None:
        exit_on_error = args is None
    try:
        args = with_named_configs(sys.argv[1:] if args is None else args)  # `--config teacher/stereoset_minilm`
        return LmshrinkCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=NeverOverwriteConfig,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False},
            args=args,
        )
    except GateFailure as failure:
        if not exit_on_error:
            raise
        print("gate FAILED:\n  " + str(failure).replace("\n", "\n  "), file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as exc:
        from jsonargparse import ArgumentError

        mistake = OptionError(concise_parse_error(exc)) if isinstance(exc, ArgumentError) else user_error(exc)
        if mistake is None or debug() or not exit_on_error:
            raise
        print(f"error: {message(mistake)}", file=sys.stderr, flush=True)
        if isinstance(exc, ArgumentError):
            print("hint: python train.py SUBCOMMAND --help lists every option", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
