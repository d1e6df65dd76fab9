"""Does a model fit the job? The one check every command makes before it uses a model.

A model that does not fit the job still loads: transformers builds a causal-LM head on a fine-tuned encoder, or
re-initialises a classifier head of the wrong size (``ignore_mismatched_sizes``), prints a load report, and the
run goes on to measure a random head. Such a number is worse than an error: a gate passes a model whose head was
re-initialised, an audit reports the toxicity of noise. So every loader (:mod:`lmshrink.backbones`) checks, from
the model's config before any weight is read:

- the **kind**: a causal LM, a sequence classifier or a token classifier, as the job needs;
- the **head**: its number of labels equals the data's (a new head is allowed only where one is meant to be
  trained, and then said in one line), and its class names (``id2label``, when it has real ones) equal the data's;
- the **context**: the sequence length asked for fits the model's position embeddings;

and, once the weights are read, that none was missing or re-initialised (transformers' loading info).
Each error names the option the model was given by and what the model holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lmshrink.errors import OptionError

ModelKind = Literal["causal_lm", "sequence", "token"]

KIND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "causal_lm": ("ForCausalLM", "LMHeadModel"),
    "sequence": ("ForSequenceClassification",),
    "token": ("ForTokenClassification",),
}
"""Architecture (class) name endings of each kind, as ``config.json``'s ``architectures`` lists them
(``GPT2LMHeadModel`` is GPT-2's causal LM)."""

KIND_NAMES = {"causal_lm": "a causal (generative) LM", "sequence": "a sequence classifier",
              "token": "a token classifier"}

CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx", "seq_length")
"""Config fields holding a model's context length, in the order transformers' model families use them."""

DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")
"""transformers' placeholder class names: a config with only these says nothing about what its classes mean."""


@dataclass(frozen=True)
class Job:
    """What a command needs of a model."""

    kind: ModelKind
    num_labels: int | None = None
    """Classes of the data (classifiers); None: not checked (causal LMs)."""
    new_head: bool = False
    """The job trains a new classification head (fine-tuning, initialising a distillation student): any encoder
    is accepted (a base model, or a classifier of another task or size), and its head is (re)initialised."""


def model_kind(architectures: list[str] | None) -> str | None:
    """The kind of model a config's ``architectures`` names, or None (a base model such as ``BertModel``)."""
    for kind, suffixes in KIND_SUFFIXES.items():
        if any(name.endswith(suffixes) for name in architectures or []):
            return kind
    return None


def context_length(config: dict) -> int | None:
    """The model's context length from its config (see :data:`CONTEXT_FIELDS`), or None when it names none."""
    for field in CONTEXT_FIELDS:
        value = config.get(field)
        if isinstance(value, int) and value > 0:
            return value
    return None


def head_labels(config: dict) -> int:
    """Outputs of the config's classification head (``id2label`` when present, as transformers counts them)."""
    return len(config.get("id2label") or {}) or int(config.get("num_labels", 2))


def class_names(config: dict) -> list[str] | None:
    """The head's class names in id order, or None when they are transformers' placeholders (``LABEL_0``...)."""
    id2label = config.get("id2label") or {}
    names = [str(id2label[key]) for key in sorted(id2label, key=int)] if id2label else []
    if not names or all(DEFAULT_LABEL.match(name) for name in names):
        return None
    return names


def _described(config: dict) -> str:
    return ", ".join(config.get("architectures") or []) or f"a base {config.get('model_type', 'model')} (no head)"


def check_fits(config: dict, job: Job, option: str, value: str) -> bool:
    """Refuse a model that does not fit ``job``, naming ``option=value`` and what the model is; before any weight
    is read. Returns whether the model's head is replaced by a new one (``job.new_head`` and no fitting head)."""
    where = f"{option}={value!r}"
    kind = model_kind(config.get("architectures"))
    if job.kind == "causal_lm":
        if kind != "causal_lm":
            raise OptionError(f"{where} is not a causal LM ({_described(config)}): it has no trained language-model "
                              f"head, so its generations and perplexity would be noise; pass a causal LM")
    elif job.new_head and kind == "causal_lm":
        raise OptionError(f"{where} is a causal LM ({_described(config)}); lmshrink fine-tunes and distils encoder "
                          f"classifiers: pass an encoder (a base model or any classifier, whose head is replaced)")
    elif kind != job.kind and not job.new_head:
        advice = ("fine-tune it first (train.py fit with TeacherFineTune), or pass a fine-tuned model"
                  if kind is None else f"pass {KIND_NAMES[job.kind]}")
        raise OptionError(f"{where} is not {KIND_NAMES[job.kind]} ({_described(config)}); {advice}")
    replaced = kind != job.kind and job.kind != "causal_lm"  # a base encoder, or another task's head
    if kind == job.kind and job.num_labels is not None and head_labels(config) != job.num_labels:
        if not job.new_head:
            names = [name for name in class_names(config) or [] if not name.isdigit()]  # '0', '1' say nothing
            raise OptionError(f"{where} has a {head_labels(config)}-class head"
                              f"{f' {names}' if names else ''} but the data has {job.num_labels} classes: its head "
                              f"does not fit this task (loading it would re-initialise the head); pass a model "
                              f"fine-tuned on this data")
        replaced = True
    return replaced


def check_lengths(config: dict, lengths: dict[str, int | None], option: str, value: str) -> None:
    """Each sequence length the job asks for (``{option name: tokens}``, None or 0: not used) fits the model's
    context: position embeddings past it do not exist (an index error deep in the forward) or were never trained."""
    context = context_length(config)
    for name, length in lengths.items():
        if context is not None and length and length > context:
            raise OptionError(f"{name}={length} is longer than the context of {option}={value!r} ({context} "
                              f"tokens); set {name} <= {context}")


def check_class_names(config: dict, data_names: list[str] | None, option: str, value: str) -> None:
    """A classifier trained on other classes (the same number, other names) is refused: its class 0 is not the
    data's class 0. Checked only when both sides have real names (not ``LABEL_0`` nor ``0``, ``1``...)."""
    model_names = class_names(config)
    if not data_names or model_names is None or all(name.isdigit() for name in data_names):
        return
    if [name.lower() for name in model_names] != [name.lower() for name in data_names]:
        raise OptionError(f"{option}={value!r} predicts the classes {model_names} but the data's classes are "
                          f"{list(data_names)} (in id order): it was trained on another task or label order")


def check_loaded(info: dict, option: str, value: str) -> None:
    """After ``from_pretrained(..., output_loading_info=True)``: no weight of the model was missing from the files or
    re-initialised for a size mismatch (the last line of defence behind :func:`check_fits`)."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(key for key, *_ in info.get("mismatched_keys") or [])
    if missing or mismatched:
        keys = missing or mismatched
        what = "missing from its files" if missing else "of another shape in its files"
        raise OptionError(f"{option}={value!r}: {len(keys)} weights the model needs are {what} ({', '.join(keys[:3])}"
                          f"{', ...' if len(keys) > 3 else ''}), so they would be randomly initialised; pass a "
                          f"complete model of this kind")


def check_against_data(models: dict[str, tuple[str, dict]], data_names: list[str] | None,
                       max_length: int | None) -> None:
    """Each given model (``{option: (value, config)}``) against the data it will read: its class names
    (:func:`check_class_names`) and its context against the data's ``max_length``."""
    for option, (value, config) in models.items():
        check_class_names(config, data_names, option, value)
        check_lengths(config, {"--data.max_length": max_length}, option, value)


def check_checkpoint(checkpoint, where: str, module_class: str | None = None, task: str | None = None,
                     weights: dict[str, tuple[int, ...]] | None = None) -> None:
    """A Lightning checkpoint fits the run it is loaded into: it is one (a ``state_dict``), written by
    ``module_class`` (its ``_class_path``), of ``task``, with the module's ``weights`` (``{name: shape}``); each
    part is checked when given. Otherwise Lightning replaces the configured module by the checkpoint's (whose task
    then contradicts the data), or fails deep in ``load_state_dict``. ``where`` names the option
    (``--ckpt_path X``)."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise OptionError(f"{where}: not a Lightning checkpoint (no state_dict; it holds {keys}); pass a .ckpt "
                          f"written by train.py fit")
    hparams = checkpoint.get("hyper_parameters") or {}
    saved_class = hparams.get("_class_path")
    if saved_class and module_class and saved_class != module_class:
        raise OptionError(f"{where} holds a {saved_class.rsplit('.', 1)[-1]} checkpoint, but the config runs "
                          f"{module_class.rsplit('.', 1)[-1]}: pass the config of the run that wrote it")
    if hparams.get("task") and task and hparams["task"] != task:
        raise OptionError(f"{where} is a checkpoint of a {hparams['task']} classification run; this run does "
                          f"{task} classification: evaluate it with the config of the run that wrote it")
    if weights is None:
        return
    saved = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items() if hasattr(value, "shape")}
    missing = sorted(set(weights) - set(saved))
    unexpected = sorted(set(saved) - set(weights))
    resized = sorted(name for name in set(saved) & set(weights) if saved[name] != weights[name])
    if resized:
        name = resized[0]
        raise OptionError(f"{where} holds weights of another model: {len(resized)} differ in shape (e.g. {name}: "
                          f"{list(saved[name])} in the file, {list(weights[name])} in this run's model); pass a "
                          f"checkpoint of this run's model and data")
    if missing or unexpected:
        example = (f"this run's {missing[0]} is not in the file" if missing else
                   f"the file's {unexpected[0]} is not in this run's model")
        raise OptionError(f"{where} was written by another kind of run ({len(missing)} weights missing, "
                          f"{len(unexpected)} unexpected; {example}); pass a checkpoint of this run's module")
