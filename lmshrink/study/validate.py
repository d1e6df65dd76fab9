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
    from lmshrink.quantize.schemes import SCHEMES, check_supported

    where = f"study config {spec.path}"
    if not Path(spec.eval_config).is_file():
        raise OptionError(f"{where}: eval_config {spec.eval_config!r} does not exist")
    for stage in spec.stages:
        label = f"{where}: stage {stage.name!r}"
        if stage.kind == "quantize":
            if stage.scheme not in SCHEMES:
                raise OptionError(f"{label}: scheme {stage.scheme!r} is unknown; choose one of {sorted(SCHEMES)}")
            if SCHEMES[stage.scheme].calibrated:
                raise OptionError(f"{label}: scheme {stage.scheme!r} is not a study scheme yet (its latency step "
                                  f"has no calibration data); run it with the Quantize callback")
            try:
                check_supported(stage.scheme, _device())
            except Exception as exc:
                raise OptionError(f"{label}: scheme {stage.scheme!r}: {exc}") from None
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
                check_args(subcommand, args)
            except OptionError as exc:
                raise OptionError(f"{label} ({'evaluation' if subcommand == 'test' else subcommand}): {exc}") from None


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
