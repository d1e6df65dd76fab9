"""The study YAML: which stages to run, from which model, over which seeds. Checked before anything runs.

    output_dir: runs/study_stereoset_minilm
    seeds: [0, 1, 2]
    common_args: []                  # appended to every train.py call
    precision: 32-true               # or bf16-mixed, or auto (bf16-mixed where the machine has native bf16)
    eval_args: []                    # appended to every evaluation (train.py test) only
    stages:
      - {name: teacher, kind: teacher, config: configs/teacher/stereoset_minilm.yaml, seeded: false}
      - {name: distill-3l, kind: distill, from: teacher, config: configs/distill/stereoset_minilm_to_3layer.yaml}
      - {name: kprune-0.5, kind: prune, from: teacher, config: configs/prune/kprune_stereoset.yaml,
         args: [--model.method.flops_keep_ratio=0.5]}
      - {name: int8, kind: quantize, from: teacher, scheme: dynamic-int8, seeded: false}

Kinds: ``teacher`` (fit a TeacherFineTune, export its final weights), ``distill`` (fit a Distillation from
``from``), ``prune`` (a Prune module run, from ``from``), ``quantize`` (``scheme`` applied to ``from`` at test).
A ``seeded`` stage runs once per seed; an unseeded one once, unless its input is seeded (then once per input).

``task: generative`` studies a causal LM (:mod:`lmshrink.study.generative`): the teacher is a given ``model``
(nothing trains it), a ``prune`` stage names a one-shot ``method`` (``wanda-0.5``, ``sparsegpt-2:4``,
``kprune-keep0.9`` ...; ``args`` are ``lmshrink.prune_generator`` flags), ``distill`` fits a causal student from
its ``config``, and every model is audited once per seed (the sampling seed), so every stage runs per seed; a
``seeded`` stage also builds with the seed (calibration sample, training), an unseeded one builds the same model
in every seed's directory.

    task: generative
    output_dir: runs/study_smollm2_generative
    seeds: [0, 1, 2]
    eval_config: configs/generative/study_smollm2.yaml
    stages:
      - {name: teacher, kind: teacher, model: smollm2}
      - {name: wanda-0.5, kind: prune, from: teacher, method: wanda-0.5, args: [--sequences=16]}
      - {name: int8, kind: quantize, from: teacher, scheme: dynamic-int8}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import yaml

from lmshrink.data.text_files import decode_utf8
from lmshrink.machine import PrecisionChoice
from lmshrink.shipped_configs import resolve_config

KINDS = ("teacher", "distill", "prune", "quantize")
TASKS = ("classification", "generative")
STAGE_KEYS = {"name", "kind", "from", "config", "args", "seeded", "scheme", "model", "method"}


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    config: str | None
    source: str | None
    args: tuple[str, ...] = ()
    seeded: bool = True
    scheme: str | None = None
    model: str | None = None
    """Generative teacher: the causal LM audited (a local HF directory or ``smollm2``)."""
    method: str | None = None
    """Generative prune: the one-shot method spec of ``lmshrink.prune_generator --method``."""


@dataclass(frozen=True)
class StudySpec:
    path: Path
    output_dir: Path
    seeds: tuple[int, ...]
    stages: tuple[Stage, ...]
    common_args: tuple[str, ...] = ()
    eval_args: tuple[str, ...] = ()
    """Appended to every evaluation (``train.py test``) only, e.g. a generative audit's sizes."""
    eval_config: str = "configs/teacher/stereoset_minilm.yaml"
    """The config whose data section every model is evaluated with (one test set for the whole study)."""
    wandb: dict = field(default_factory=dict)
    task: str = "classification"
    precision: PrecisionChoice = "32-true"
    """Lightning precision of every fit, pruning run and evaluation of a float model (``auto``: ``bf16-mixed``
    where the machine has native bf16, :func:`lmshrink.machine.resolve_precision`); a quantize stage is always
    evaluated in ``32-true``, so that its numbers are the scheme's alone."""

    @property
    def generative(self) -> bool:
        return self.task == "generative"

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def seeds_of(self, stage: Stage) -> tuple[int | None, ...]:
        """The seeds a stage runs with (``(None,)``: once). A generative model is audited with every seed."""
        if stage.seeded or self.generative:
            return self.seeds
        if stage.source is not None:
            return self.seeds_of(self.stage(stage.source))
        return (None,)


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"study config {path} is a directory; give the study's YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"study config {path} does not exist")
    where = f"study config {path}"
    try:
        raw = yaml.safe_load(decode_utf8(path, path.read_bytes())) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{where}:{line} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of keys (output_dir, seeds, stages, ...), got a "
                         f"{type(raw).__name__}")
    _check_types(raw, where)
    unknown = set(raw) - {"output_dir", "seeds", "stages", "common_args", "eval_args", "eval_config", "wandb", "task",
                          "precision"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise ValueError(f"{where}: task {task!r} is not one of {list(TASKS)}")
    precision = raw.get("precision", "32-true")
    if precision not in get_args(PrecisionChoice):
        raise ValueError(f"{where}: precision {precision!r} is not one of {list(get_args(PrecisionChoice))}")
    if "output_dir" not in raw or not raw.get("stages"):
        raise ValueError(f"{where}: needs output_dir and a non-empty stages list")
    seeds = tuple(raw.get("seeds") or [0])
    if not all(isinstance(seed, int) for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds must be distinct integers, got {list(seeds)}")
    stages, names = [], set()
    for index, entry in enumerate(raw["stages"]):
        label = f"{where}: stages[{index}]"
        if not isinstance(entry, dict) or set(entry) - STAGE_KEYS:
            raise ValueError(f"{label}: expected a mapping with keys among {sorted(STAGE_KEYS)}, got {entry!r}")
        if not _is_list_of(entry.get("args", []), str):
            raise ValueError(f"{label}: args must be a list of options such as [--sequences=16], got "
                             f"{entry.get('args')!r}")
        name, kind = entry.get("name"), entry.get("kind")
        if not name or "/" in str(name) or name in names:
            raise ValueError(f"{label}: name {name!r} is missing, contains '/', or is used twice")
        if kind not in KINDS:
            raise ValueError(f"{label} ({name}): kind {kind!r} is not one of {list(KINDS)}")
        source = entry.get("from")
        if kind == "teacher" and source is not None:
            raise ValueError(f"{label} ({name}): a teacher stage starts from its config, not from another stage")
        if kind != "teacher" and source not in names:
            raise ValueError(f"{label} ({name}): 'from: {source}' must name an earlier stage")
        config = resolve_config(entry["config"]) if isinstance(entry.get("config"), str) else entry.get("config")
        needs = _needed_keys(task, kind)
        for key in ("config", "model", "method", "scheme"):
            if key in needs and not entry.get(key):
                raise ValueError(f"{label} ({name}): a {task} {kind} stage needs '{key}'")
            if key not in needs and entry.get(key) is not None:
                raise ValueError(f"{label} ({name}): a {task} {kind} stage takes no '{key}' (it needs "
                                 f"{sorted(needs) or 'none of config, model, method, scheme'})")
        if entry.get("args") and not has_build_run(task, kind):
            raise ValueError(f"{label} ({name}): a {task} {kind} stage has no build run, so its 'args' would be "
                             f"ignored; options of its evaluation go in the study's eval_args")
        if "config" in needs and not Path(config).is_file():
            raise ValueError(f"{label} ({name}): config {config!r} does not exist")
        stages.append(Stage(name, kind, config, source, tuple(entry.get("args") or ()), bool(entry.get("seeded", True)),
                            entry.get("scheme"), entry.get("model"), entry.get("method")))
        names.add(name)
    if stages[0].kind != "teacher":
        raise ValueError(f"{where}: the first stage must be the teacher (the reference of every delta)")
    eval_config = resolve_config(raw["eval_config"]) if raw.get("eval_config") else stages[0].config
    if eval_config is None:
        raise ValueError(f"{where}: a generative study needs eval_config (the GenerativeAudit config every model is "
                         f"audited with)")
    if Path(raw["output_dir"]).exists() and not Path(raw["output_dir"]).is_dir():
        raise ValueError(f"{where}: output_dir {raw['output_dir']!r} is a file; name a directory (new or a study's)")
    return StudySpec(path, Path(raw["output_dir"]), seeds, tuple(stages), tuple(raw.get("common_args") or ()),
                     tuple(raw.get("eval_args") or ()), eval_config, raw.get("wandb") or {}, task, precision)


def _is_list_of(value, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(item, kind) and not isinstance(item, bool) for item in value)


def _check_types(raw: dict, where: str) -> None:
    """Each top-level field has the type it is read as: a mistake such as ``seeds: 3`` (for ``[0, 1, 2]``) or
    ``common_args: --x`` is named, not met later as a traceback or a string split into characters."""
    expected = {"seeds": (lambda v: _is_list_of(v, int), "a list of integers, e.g. [0, 1, 2]"),
                "stages": (lambda v: isinstance(v, list), "a list of stages"),
                "common_args": (lambda v: _is_list_of(v, str), "a list of options such as [--trainer.devices=2]"),
                "eval_args": (lambda v: _is_list_of(v, str), "a list of options"),
                "output_dir": (lambda v: isinstance(v, str), "a directory path"),
                "eval_config": (lambda v: isinstance(v, str), "a config path"),
                "wandb": (lambda v: isinstance(v, dict), "a mapping such as {project: lmshrink, offline: true}"),
                "task": (lambda v: isinstance(v, str), "a task name")}
    for key, (fits, what) in expected.items():
        if raw.get(key) is not None and not fits(raw[key]):
            raise ValueError(f"{where}: {key} must be {what}, got {raw[key]!r}")


def _needed_keys(task: str, kind: str) -> set[str]:
    """Which of config / model / method / scheme a stage of this task and kind is defined by."""
    if kind == "quantize":
        return {"scheme"}
    if task == "generative":
        return {"teacher": {"model"}, "prune": {"method"}, "distill": {"config"}}[kind]
    return {"config"}


def has_build_run(task: str, kind: str) -> bool:
    """Whether a stage of this task and kind has a build run (the one its ``args`` go to): a quantize stage is
    applied at evaluation, and a generative teacher is a given model. The study's build commands ask this too."""
    return kind != "quantize" and not (task == "generative" and kind == "teacher")
