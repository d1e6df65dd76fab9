"""Runs a study's stages as ``train.py`` processes, resumably, and records one result per (stage, seed).

Every (stage, seed) has its own run directory ``<output_dir>/<stage>/seed<k>`` (``once`` when unseeded):

- ``run/``: the Lightning run that builds the model (fit for teacher/distill, validate for prune; quantize has
  none: the scheme is applied at evaluation); its model goes to ``run/model``;
- ``eval/``: ``train.py test`` of that model with the study's evaluation config (one test set for all rows),
  compared with its teacher on the same examples (``lmshrink.modules.Compare``), whose logits are kept per batch
  in the teacher's ``reference_logits/`` and served to the seed's later comparisons at the same precision;
- ``result.json``: written last, from the evaluation's ``group_metrics_test.json`` and the measurements.
  Its presence means "done": a rerun skips the stage and never recomputes it.

A stage killed midway resumes: a fit with a ``last.ckpt`` continues from it (``--ckpt_path last``); anything
else incomplete is moved aside to ``<dir>.incomplete-N`` (never deleted) and started again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from lmshrink.errors import UserError
from lmshrink.machine import cpu_line, resolve_precision
from lmshrink.paths import free_path
from lmshrink.data.text_files import read_json
from lmshrink.study.children import run_child
from lmshrink.study.spec import Stage, StudySpec, has_build_run

RESULT = "result.json"
RECORD_NUMBERS = {
    "accuracy": ("avg_acc", "worst_group_acc", "macro_f1", "worst_group_acc_ci", "ece", "brier", "flip_rate",
                 "kl_to_reference", "reliability", "significant_groups", "interval_methods"),
    "f1": ("f1", "precision", "recall", "worst_group_f1", "macro_f1", "worst_group_f1_ci", "group_gap", "types",
           "significant_groups"),
}
"""Read from the evaluation's ``group_metrics_test.json`` into ``result.json``, by the record's ``metric``
(sequence classifiers: accuracy; token classifiers: entity F1); absent ones are None."""
GROUP_NUMBERS = {
    "accuracy": ("n", "accuracy", "ci_low", "ci_high", "ece", "delta_to_reference", "delta_ci_low", "delta_ci_high",
                 "flip_rate", "p_holm"),
    "f1": ("n", "entities", "f1", "precision", "recall", "ci_low", "ci_high", "delta_to_reference", "delta_ci_low",
           "delta_ci_high", "p_holm"),
}
TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"
RUN_THREADS = threading.local()
"""``count``: CPU threads (``OMP_NUM_THREADS``) of the processes this worker thread starts; unset: the default."""


def run_dir(spec: StudySpec, stage: Stage, seed: int | None) -> Path:
    return spec.output_dir / stage.name / ("once" if seed is None else f"seed{seed}")


def model_of(spec: StudySpec, stage: Stage, seed: int | None) -> tuple[Path, str | None]:
    """(model directory, quantization scheme or None) that a stage produces for ``seed``."""
    if stage.model is not None:  # a generative study's teacher: given, not built
        return Path(stage.model), None
    if stage.kind == "quantize":
        source = spec.stage(stage.source)
        base, scheme = model_of(spec, source, input_seed(spec, source, seed))
        if scheme is not None:
            raise ValueError(f"stage {stage.name}: its input {source.name} is already quantized")
        return base, stage.scheme
    return run_dir(spec, stage, seed) / "run" / "model", None


def input_seed(spec: StudySpec, source: Stage, seed: int | None) -> int | None:
    """The seed of ``source``'s run that a run with ``seed`` builds on (None: the source ran once)."""
    return seed if spec.seeds_of(source) != (None,) else None


def precision_of(spec: StudySpec, stage: Stage) -> str:
    """The Lightning precision a stage builds and is evaluated in: the study's (resolved on this machine), except
    a quantize stage, evaluated in 32-true so that its deltas are the scheme's alone."""
    return "32-true" if stage.kind == "quantize" else resolve_precision(spec.precision)


def build_command(spec: StudySpec, stage: Stage, seed: int | None) -> tuple[str, list[str]] | None:
    """(subcommand, arguments) of the run that builds the stage's model; None for quantize (no build step)."""
    if not has_build_run(spec.task, stage.kind):
        return None
    directory = run_dir(spec, stage, seed) / "run"
    seed_args = [f"--seed_everything={seed}"] if seed is not None else []
    common = ["--config", stage.config, *seed_args, f"--trainer.default_root_dir={directory}",
              f"--trainer.precision={precision_of(spec, stage)}"]
    no_test = ["--trainer.limit_test_batches=0"]  # a fit tests its model at its end; the study's evaluation does
    if stage.kind == "teacher":
        args = [*common, f"--model.export_dir={directory / 'model'}", *no_test]
        return "fit", [*args, *spec.common_args, *stage.args]
    source = spec.stage(stage.source)
    source_model, scheme = model_of(spec, source, input_seed(spec, source, seed))
    if scheme is not None:
        raise ValueError(f"stage {stage.name}: cannot {stage.kind} the quantized output of {source.name}")
    if stage.kind == "distill":
        args = [*common, f"--model.teacher_path={source_model}", f"--model.student_save_dir={directory / 'model'}",
                *no_test]
        return "fit", [*args, *spec.common_args, *stage.args]
    args = [*common, f"--model.teacher_path={source_model}", f"--model.save_dir={directory / 'model'}",
            "--trainer.limit_val_batches=1"]  # the study's own evaluation measures the pruned model
    if seed is not None and stage.seeded:  # an unseeded stage (magnitude pruning) runs once per seeded input only
        args.append(f"--model.seed={seed}")
    return "validate", [*args, *spec.common_args, *stage.args]


def teacher_of(spec: StudySpec, seed: int | None) -> Path:
    """The teacher a (stage, seed) is compared with: the same seed's teacher when the teacher is seeded (as Gee et
    al. pair each compressed model with its own seed's teacher), else the one teacher."""
    return model_of(spec, *teacher_run(spec, seed))[0]


def teacher_run(spec: StudySpec, seed: int | None) -> tuple[Stage, int | None]:
    """The teacher stage and its seed that (stage, ``seed``) is compared with."""
    teacher = spec.stages[0]
    return teacher, input_seed(spec, teacher, seed)


def eval_command(spec: StudySpec, stage: Stage, seed: int | None) -> list[str]:
    """``train.py test`` arguments: the teacher alone; every other model against its teacher on the same examples
    (``lmshrink.modules.Compare``: paired deltas, flips, McNemar/Holm, paired intervals)."""
    model_dir, scheme = model_of(spec, stage, seed)
    where = [f"--trainer.default_root_dir={run_dir(spec, stage, seed) / 'eval'}",
             f"--trainer.precision={precision_of(spec, stage)}"]
    if stage.kind == "teacher":
        model = [f"--model.model_path={model_dir}", "--model.export_dir=null"]
    else:  # the teacher's logits are kept per batch beside its run and served to every comparison of its seed
        kept = run_dir(spec, *teacher_run(spec, seed)) / "reference_logits"
        model = ["--model=lmshrink.modules.Compare", f"--model.model_path={model_dir}",
                 f"--model.reference_path={teacher_of(spec, seed)}", "--model.reference_name=teacher",
                 f"--model.reference_cache_dir={kept}"]
    args = ["--config", spec.eval_config, *model, *where, *spec.common_args, *spec.eval_args]
    if scheme is not None:  # no float copy (the teacher is the study's reference) and no timing (the report times
        # every model side by side; here a compiled scheme would compile twice more, for batch sizes 1 and 32)
        from lmshrink.quantize.schemes import cpu_only

        args += ["--trainer.callbacks+=lmshrink.callbacks.Quantize", f"--trainer.callbacks.scheme={scheme}",
                 "--trainer.callbacks.compare_to_float=false", "--trainer.callbacks.latency_batch_sizes=[]"]
        if cpu_only(scheme):  # on a GPU machine too, after the command line's own --trainer.accelerator / devices:
            # its kernels exist on the CPU only, where it would be deployed
            args += ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"]
    sample_seed = calibration_seed(scheme, seed)
    if sample_seed is not None:
        args.append(f"--trainer.callbacks.calibration_seed={sample_seed}")
    return args


def calibration_seed(scheme: str | None, seed: int | None) -> int | None:
    """The seed of a calibrated scheme's sample of the training split: the study's seed (0 for a run without
    one), so that each seed's interval includes the calibration sample's effect; None for other schemes."""
    from lmshrink.quantize.schemes import SCHEMES

    return (0 if seed is None else seed) if scheme is not None and SCHEMES[scheme].calibrated else None


def _train_py(subcommand: str, args: list[str], log: Path) -> None:
    run_python([str(TRAIN_PY), subcommand, *args], log)


def run_python(argv: list[str], log: Path) -> None:
    """``python argv`` (``train.py ...`` or ``-m module ...``) in a new process (a child of the study's
    pre-imported forkserver, :mod:`lmshrink.study.children`), its output appended to ``log`` after the command
    line; a failure names the log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if getattr(RUN_THREADS, "count", None):  # set by the scheduler of ``--jobs``, per worker thread
        env["OMP_NUM_THREADS"] = str(RUN_THREADS.count)
    shown = " ".join(["train.py" if arg == str(TRAIN_PY) else "python -m" if arg == "-m" else arg for arg in argv])
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as stream:
        stream.write(f"\n$ {shown}\n")
    status = run_child(argv, str(log), env)
    if status == 2:  # the run refused its input: train.py's one "error:" line (the log's last), not a traceback
        said = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error: ")]
        raise UserError(f"{shown.split(' --')[0]} ({log}): " + (said[-1].removeprefix("error: ") if said else
                                                                 "refused its options"))
    if status != 0:
        raise RuntimeError(f"{shown.split(' --')[0]} failed ({status}); see {log}")


def set_aside(directory: Path) -> None:
    if directory.exists():
        target = free_path(directory.parent, directory.name + ".incomplete", "")
        directory.rename(target)
        print(f"[study] moved incomplete {directory} to {target}", flush=True)


def _build(spec: StudySpec, stage: Stage, seed: int | None, log: Path) -> None:
    command = build_command(spec, stage, seed)
    if command is not None:
        subcommand, args = command
        build_in(run_dir(spec, stage, seed) / "run", [str(TRAIN_PY), subcommand, *args], log, subcommand == "fit")


def build_in(directory: Path, argv: list[str], log: Path, fit: bool) -> None:
    """Run ``argv`` to build a model into ``directory/model`` unless a finished build is there: a killed fit
    resumes from its ``last.ckpt``; anything else half-done is set aside and started again."""
    if (directory / "model").is_dir() and any((directory / "model").iterdir()) and (directory / "built").exists():
        return
    if fit and (directory / "checkpoints" / "last.ckpt").is_file():
        argv = [*argv, "--ckpt_path", "last"]  # resume the killed fit where its last checkpoint left it
    else:
        set_aside(directory)
    run_python(argv, log)
    (directory / "built").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))


def recorded(directory: Path, stage: Stage, seed: int | None, work, indent: int | None = 2) -> dict:
    """``work(log)``'s result for one (stage, seed), with its wall time, written to ``result.json`` last; a
    recorded result is returned as it is and never recomputed."""
    if (directory / RESULT).is_file():
        print(f"[study] {stage.name} seed={seed}: done, skipped", flush=True)
        return read_json(directory / RESULT)
    print(f"[study] {stage.name} seed={seed}: running", flush=True)
    start = time.perf_counter()
    result = work(directory / "train.log")
    result["stage_seconds"] = time.perf_counter() - start
    (directory / RESULT).write_text(json.dumps(result, indent=indent))
    return result


def run_stage(spec: StudySpec, stage: Stage, seed: int | None, measure) -> dict:
    """Build, evaluate and measure one (stage, seed) unless its result exists; returns the result."""
    directory = run_dir(spec, stage, seed)

    def work(log: Path) -> dict:
        _build(spec, stage, seed, log)
        set_aside(directory / "eval")
        _train_py("test", eval_command(spec, stage, seed), log)
        groups = the_record(directory / "eval", "group_metrics_test*.json")
        model_dir, scheme = model_of(spec, stage, seed)
        sample_seed = calibration_seed(scheme, seed)
        metric = groups.get("metric", "accuracy")
        result = {"stage": stage.name, "kind": stage.kind, "from": stage.source, "seed": seed, "scheme": scheme,
                  "model_dir": str(model_dir), "eval_set": groups.get("eval_set"), "metric": metric,
                  "run_precision": groups.get("run_precision"), "cpu": cpu_line(),
                  "calibration_seed": sample_seed,
                  **{key: groups.get(key) for key in RECORD_NUMBERS[metric]},
                  "groups": {row["group"]: {key: row.get(key) for key in GROUP_NUMBERS[metric]}
                             for row in groups["groups"]},
                  **measure(model_dir)}
        if scheme is not None:  # the size of the quantized model the evaluation ran, as its Quantize callback measured
            quantized = the_record(directory / "eval", f"quantization_{scheme}_test*.json")
            result["size_mb"] = quantized["size_latency"]["quantized"]["memory_mb"]
        pruning = sorted((directory / "run").rglob("pruning_record_val*.json"))
        if pruning:
            record = read_json(pruning[-1])
            result["pruning"] = {key: record[key] for key in ("method", "pruning_seconds", "flops_kept",
                                                              "heads_per_layer", "neurons_per_layer") if key in record}
        return result

    return recorded(directory, stage, seed, work)


def the_record(directory: Path, pattern: str) -> dict:
    """The one record a fresh evaluation directory holds (it is set aside before every evaluation, so a second
    file would mean two evaluations were mixed: refused instead of guessing by modification time)."""
    paths = sorted(directory.rglob(pattern))
    if len(paths) != 1:
        raise FileNotFoundError(f"expected one {pattern} under {directory}, found {[str(p) for p in paths]}: the "
                                f"evaluation did not report, or several did")
    return read_json(paths[0])
