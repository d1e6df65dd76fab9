"""Building a student: a subset of the teacher's layers, a smaller random config, or another local model.

Layer stacks are found from a small table of architectures (real HF attribute paths), so a subset copy
works the same for BERT/MiniLM, RoBERTa, DistilBERT and Llama-style causal LMs (SmolLM2).
"""

from __future__ import annotations

import copy

from torch import nn
from transformers import PreTrainedModel

LAYER_STACKS = {
    "bert": ("bert.encoder.layer", "num_hidden_layers"),
    "roberta": ("roberta.encoder.layer", "num_hidden_layers"),
    "distilbert": ("distilbert.transformer.layer", "n_layers"),
    "llama": ("model.layers", "num_hidden_layers"),
}
"""model_type -> (path of the ModuleList of blocks, config field counting them)."""


def _stack(model: PreTrainedModel) -> tuple[str, str]:
    model_type = model.config.model_type
    if model_type not in LAYER_STACKS:
        raise ValueError(f"model_type {model_type!r} has no layer table entry; supported: {sorted(LAYER_STACKS)}")
    return LAYER_STACKS[model_type]


def num_layers(model: PreTrainedModel) -> int:
    return getattr(model.config, _stack(model)[1])


def student_from_teacher_layers(teacher: PreTrainedModel, keep_layers: list[int]) -> PreTrainedModel:
    """A copy of the teacher keeping only ``keep_layers`` (0-based block indices, in order), like
    DistilBERT's every-other-layer initialisation. Embeddings, head and config otherwise stay the same, so
    keeping every layer gives a model identical to the teacher."""
    path, count_field = _stack(teacher)
    total = getattr(teacher.config, count_field)
    if not keep_layers or sorted(set(keep_layers)) != list(keep_layers) or not all(0 <= i < total for i in keep_layers):
        raise ValueError(f"student_layers={keep_layers}: need increasing block indices in 0..{total - 1}")
    student = copy.deepcopy(teacher)
    parent_path, _, attribute = path.rpartition(".")
    parent = student.get_submodule(parent_path)
    blocks = getattr(parent, attribute)
    setattr(parent, attribute, nn.ModuleList([blocks[i] for i in keep_layers]))
    setattr(student.config, count_field, len(keep_layers))
    if getattr(student.config, "layer_types", None) is not None:  # per-layer attention types (Llama, ...)
        student.config.layer_types = [student.config.layer_types[i] for i in keep_layers]
    for new_index, block in enumerate(getattr(parent, attribute)):
        attention = getattr(block, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index  # the KV cache is indexed by position in the stack
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return student.train()


def evenly_spaced_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """Every k-th block, ending with the last (e.g. 6 -> 3: [1, 3, 5]; 30 -> 15: odd blocks)."""
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(f"student of {num_student_layers} layers from a teacher of {num_teacher_layers}")
    step = num_teacher_layers / num_student_layers
    return [round((i + 1) * step) - 1 for i in range(num_student_layers)]


def layer_map(num_student_layers: int, num_teacher_layers: int, strategy: str | list[int] = "uniform") -> list[int]:
    """Teacher block matched to each student block, both 0-based (as ``student_layers``); a HF model's hidden
    state ``i + 1`` is block ``i``'s output (0 is the embeddings).

    ``uniform``: student block i <- teacher block (i + 1) * L_t / L_s - 1 (TinyBERT: every k-th, ending with the
    last). ``last``: the last L_s teacher blocks. A list gives the teacher block of each student block explicitly.
    """
    if isinstance(strategy, list):
        if len(strategy) != num_student_layers or not all(0 <= t < num_teacher_layers for t in strategy):
            raise ValueError(f"layer_map {strategy}: need {num_student_layers} teacher blocks (0-based) in "
                             f"0..{num_teacher_layers - 1}")
        return list(strategy)
    if strategy == "uniform":
        return evenly_spaced_layers(num_teacher_layers, num_student_layers)
    if strategy == "last":
        return list(range(num_teacher_layers - num_student_layers, num_teacher_layers))
    raise ValueError(f"layer_map strategy {strategy!r}: use 'uniform', 'last' or a list of teacher blocks")


def student_from_config(teacher: PreTrainedModel, **overrides) -> PreTrainedModel:
    """A randomly initialised model of the teacher's architecture with config fields overridden
    (e.g. ``num_hidden_layers=3, hidden_size=256``)."""
    config = copy.deepcopy(teacher.config)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"student_config: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    return type(teacher)(config).train()


def check_same_tokenizer(teacher_tokenizer, student_tokenizer, teacher_path: str, student_path: str,
                         roles: tuple[str, str] = ("teacher", "student"),
                         why: str = "distillation compares outputs token by token") -> None:
    """Teacher and student (or ``roles``) must read the same token ids: same vocabulary and special tokens."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab() or \
            teacher_tokenizer.all_special_ids != student_tokenizer.all_special_ids:
        raise ValueError(
            f"tokenizer mismatch: {student_path} ({roles[1]}, vocab {len(student_tokenizer)}) does not use the "
            f"tokenizer of {teacher_path} ({roles[0]}, vocab {len(teacher_tokenizer)}); {why}, so both must share "
            f"one tokenizer"
        )
