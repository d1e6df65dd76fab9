"""``LmshrinkCLI``: a ``LightningCLI`` that checks everything before the first batch and cleans up a failed start.

Checks, in order: the model's task against the data's, the given models against the data (class names, context),
a fresh fit against an earlier run's files, the module's outputs, a resumed checkpoint against the config. A run
that fails before its first training step removes what it wrote (config, W&B run, step-0 checkpoints), so the same
command can be re-run once the mistake is fixed. ``fit`` ends with a test (see
:mod:`lmshrink.cli.main`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lmshrink.cli.resume import given_ckpt_path, resolve_checkpoint, resume_mismatches
from lmshrink.cli.run_dirs import (
    NeverOverwriteConfig,
    add_console_callbacks,
    checkpoint_dirs,
    drop_logger_callbacks_without_a_logger,
    fill_run_dirs,
    refuse_to_overwrite,
    remove_if_empty,
)
from lmshrink.cli.wandb_runs import announce_runs, continue_wandb_run, forget_run_id, remove_started_runs, save_run_id
from lmshrink.datamodules.splits import SplitsDataModule
from lmshrink.errors import OptionError, OutputExistsError
from lmshrink.machine import precision_line
from lmshrink.model_fit import check_against_data, check_checkpoint
from lmshrink.paths import refuse_non_empty
from lmshrink.modules.base import LmshrinkModule
from lmshrink.pruning.methods import PruningMethod


def class_of(class_path) -> type | None:
    """The class a config's ``class_path`` names (``lmshrink.modules.Prune``), imported, without instantiating it;
    None when it names no class."""
    import importlib

    module_name, _, class_name = str(class_path or "").rpartition(".")
    found = vars(importlib.import_module(module_name)).get(class_name) if module_name else None
    return found if isinstance(found, type) else None


def data_task(config: Namespace) -> str | None:
    """The task of the configured datamodule class (``SplitsDataModule.task``), without instantiating it; None for
    another datamodule."""
    data_class = class_of(config.data.get("class_path"))
    return data_class.task if data_class is not None and issubclass(data_class, SplitsDataModule) else None


def build_option_objects(model: Namespace) -> None:
    """Run the module's own option checks (:meth:`LmshrinkModule.check_options`, e.g. ``--model.top_k=-1 must be
    >= 0``) and build its pruning method so that the method's checks run too (``KPrune: flops_keep_ratio=1.5 must be
    in (0, 1]``), now, before any model loads: none of them needs one."""
    init_args = model.get("init_args") or Namespace()
    module_class = class_of(model.get("class_path"))
    if module_class is not None and issubclass(module_class, LmshrinkModule):
        module_class.check_options(**init_args.as_dict())
    for value in vars(init_args).values():
        if not (isinstance(value, Namespace) and value.get("class_path")):
            continue
        option_class = class_of(value.class_path)
        if option_class is not None and issubclass(option_class, PruningMethod):
            option_class(**(value.get("init_args") or Namespace()).as_dict())


class LmshrinkCLI(LightningCLI):
    """LightningCLI with lmshrink's run directories, checks before running and clean-up of failed starts."""

    _read_checkpoints: dict[str, dict] = {}
    """The checkpoint ``--ckpt_path`` names, read (and checked) once at parse time when given as a file."""

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
        build_option_objects(config.model)  # their own one-line refusals first
        fill_run_dirs(config)
        drop_logger_callbacks_without_a_logger(config)
        if self.subcommand:
            resolve_checkpoint(config.get("ckpt_path"), checkpoint_dirs(config))
            continue_wandb_run(config, self.subcommand)
        add_console_callbacks(config)

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
                       if isinstance(callback, ModelCheckpoint) and callback.dirpath]
        ckpt_path = resolve_checkpoint(self._ckpt_path(), directories)
        if ckpt_path is None:
            return None
        from lmshrink.backbones import read_checkpoint

        checkpoint = self._read_checkpoints.get(str(ckpt_path)) or read_checkpoint(ckpt_path, "--ckpt_path")
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
        if not isinstance(self.model, LmshrinkModule) or not isinstance(self.datamodule, SplitsDataModule):
            return
        model_task, data_task = self.model.task, self.datamodule.task
        if model_task == data_task:
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
        if self.trainer.is_global_zero:
            save_run_id(self.trainer.loggers, Path(self.trainer.default_root_dir))
        self._announce()

    def _announce(self) -> None:
        """Once every check has passed: the run's precision and machine, and its W&B runs."""
        if self.trainer.is_global_zero:
            print(f"[lmshrink] {precision_line(str(self.trainer.precision), self.trainer.strategy.root_device.type)}",
                  flush=True)
            announce_runs(self.trainer.loggers)

    def _before_evaluation(self) -> None:
        """``validate`` and ``test``: every check before the first batch."""
        self._check_task()
        self._check_models_fit_data()
        self._checkpoint()
        self._check_evaluable()
        self._check_outputs()
        self._announce()

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
                remove_if_empty(Path(callback.dirpath))
        remove_started_runs(self.trainer.loggers)
        if subcommand == "fit" and not resumed:
            forget_run_id(Path(self.trainer.default_root_dir))
        remove_if_empty(Path(self.trainer.default_root_dir))

    def after_fit(self) -> None:
        if self.trainer.interrupted or self.trainer.limit_test_batches == 0:
            return  # --trainer.limit_test_batches=0: no test at the end (a study evaluates every model by itself)
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
