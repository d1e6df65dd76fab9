"""Check a whole study before its first stage runs: every stage's scheme, options and paths.

A mistake in the last stage (``scheme: int3``, a misspelt ``--model.flops_keep_raito``) must not cost the hour
the stages before it take. Every ``train.py`` command the study will run is built for its first seed and parsed
by the same command-line parser ``train.py`` uses (options, types, choices), without loading any model or data;
the error names the stage and the option.
"""

from __future__ import annotations

from pathlib import Path

from lmshrink.errors import OptionError
from lmshrink.study.runner import build_command, eval_command
from lmshrink.study.spec import StudySpec


def check_study(spec: StudySpec) -> None:
    """Raise :class:`OptionError` naming the stage and the option of the first mistake in ``spec``."""
    from lmshrink.cli import check_args
    from lmshrink.quantize.schemes import cpu_only

    where = f"study config {spec.path}"
    if not Path(spec.eval_config).is_file():
        raise OptionError(f"{where}: eval_config {spec.eval_config!r} does not exist")
    if spec.generative:
        return _check_generative(spec, where)
    for stage in spec.stages:
        label = f"{where}: stage {stage.name!r}"
        if stage.kind == "quantize":
            _check_scheme(stage.scheme, label, "cpu" if cpu_only(stage.scheme) else _device())
        bad = [arg for arg in (*stage.args, *spec.common_args) if not str(arg).startswith("--")]
        if bad:
            raise OptionError(f"{label}: argument {bad[0]!r} is not an option (expected --name=value)")
        seeds = spec.seeds_of(stage)
        try:  # the first and the last seed: a seed's own options (--model.seed=K) are parsed too
            commands = [command for seed in dict.fromkeys((seeds[0], seeds[-1]))
                        for command in (build_command(spec, stage, seed), ("test", eval_command(spec, stage, seed)))]
        except ValueError as exc:
            raise OptionError(f"{label}: {exc}") from None
        for subcommand, args in filter(None, commands):
            try:
                _check_given_models(check_args(subcommand, args), spec)
            except (OptionError, FileNotFoundError) as exc:
                raise OptionError(f"{label} ({'evaluation' if subcommand == 'test' else subcommand}): {exc}") from None


MODEL_OPTIONS = ("model_path", "teacher_path", "student_path", "reference_path")
"""A module's options that name a model (a directory, hub id, offline default or checkpoint)."""
DATA_FILE_OPTIONS = ("dataset", "val_file", "test_file")
DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet", ".conll", ".txt", ".tsv")
"""Suffixes by which a data option's value is a file path (not a built-in set such as ``stereoset`` or a hub id)."""


def _check_given_models(config, spec: StudySpec) -> None:
    """Every model and data file a command names that the study does not make itself (models it makes lie under
    its output_dir) must be there now: a missing one in the last stage is found before the first stage runs, not
    an hour later."""
    from lmshrink.backbones import model_config, resolve_model_dir
    from lmshrink.cli.lightning_cli import data_task
    from lmshrink.model_fit import Job, check_fits

    output = spec.output_dir.resolve()
    task = data_task(config) or "sequence"
    values = {f"--model.{key}": config.model.init_args.get(key) for key in MODEL_OPTIONS}
    values["--data.tokenizer_path"] = config.data.init_args.get("tokenizer_path")
    for option in DATA_FILE_OPTIONS:  # a data file named as a path (not a built-in set or a hub id) must exist
        value = config.data.init_args.get(option)
        if isinstance(value, str) and Path(value).suffix.lower() in DATA_SUFFIXES and not Path(value).exists():
            raise OptionError(f"--data.{option}={value!r}: no such file")
    for option, value in values.items():
        if not isinstance(value, str) or Path(value).resolve().is_relative_to(output):
            continue
        if value.endswith(".ckpt"):
            if not Path(value).is_file():
                raise OptionError(f"{option}={value!r}: checkpoint does not exist")
        else:
            directory = resolve_model_dir(value, option)
            if option != "--data.tokenizer_path":  # a model (not a tokenizer) of the wrong kind, e.g. a causal LM,
                # is refused now as train.py would refuse it when the stage starts: from its config, no weights read
                check_fits(model_config(directory, option), Job(task, None, new_head=True), option, value)


def _check_scheme(scheme: str, label: str, device, refuse_calibrated: str | None = None) -> None:
    """A quantize stage's scheme: known, runnable on ``device``, and, where ``refuse_calibrated`` gives the reason,
    not calibrated."""
    from lmshrink.quantize.schemes import SCHEMES, check_supported

    if scheme not in SCHEMES:
        raise OptionError(f"{label}: scheme {scheme!r} is unknown; choose one of {sorted(SCHEMES)}")
    if SCHEMES[scheme].calibrated and refuse_calibrated is not None:
        raise OptionError(f"{label}: scheme {scheme!r} {refuse_calibrated}")
    try:
        check_supported(scheme, device)
    except Exception as exc:
        raise OptionError(f"{label}: scheme {scheme!r}: {exc}") from None


def _check_generative(spec: StudySpec, where: str) -> None:
    """A generative study: every build (``prune_generator`` flags, a distillation's fit) and every audit parsed
    for the first and the last seed, without loading a model."""
    from lmshrink.cli import check_args
    from lmshrink.prune_generator import checked
    from lmshrink.pruning.methods import from_short_name
    from lmshrink.study.generative import build_argv, eval_args

    from lmshrink.backbones import check_causal_lm

    for stage in spec.stages:
        label = f"{where}: stage {stage.name!r}"
        if stage.kind == "teacher":  # the one model a generative study does not make: it must be a causal LM now
            try:
                check_causal_lm(stage.model, "model")
            except (OptionError, FileNotFoundError) as exc:
                raise OptionError(f"{label}: {exc}") from None
        if stage.kind == "quantize":  # the audit quantizes on the CPU, whatever the study runs on
            _check_scheme(stage.scheme, label, "cpu", "needs calibration data; a generative study audits "
                                                      "weight-only and dynamic schemes")
        if stage.kind == "prune":
            try:
                method = from_short_name(stage.method)
            except OptionError as exc:
                raise OptionError(f"{label}: method {exc}") from None
            if stage.seeded and "seed" not in method.calibration_reads:
                raise OptionError(f"{label}: {stage.method} draws no calibration sample, so no seed: set "
                                  f"'seeded: false'")
        for seed in dict.fromkeys((spec.seeds[0], spec.seeds[-1])):
            try:
                argv, audit = build_argv(spec, stage, seed), eval_args(spec, stage, seed)
            except ValueError as exc:
                raise OptionError(f"{label}: {exc}") from None
            try:
                if argv is not None and argv[0] == "-m":
                    checked(argv[2:], check_save_dir=False)  # its mistakes are OptionErrors naming the flag
                elif argv is not None:
                    check_args("fit", argv[2:])
            except OptionError as exc:
                raise OptionError(f"{label}: {exc}") from None
            try:  # parsed, and the audit's own limits (top_k >= 0 ...) checked, without loading a model
                check_args("test", audit)
            except OptionError as exc:
                raise OptionError(f"{label} (audit): {exc}") from None


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
