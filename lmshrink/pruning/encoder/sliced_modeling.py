"""Encoders whose layers keep different numbers of heads and FFN neurons (physically pruned, spec §6).

This file imports only torch and transformers: it is copied next to the weights of every pruned model, and
the config's ``auto_map`` points at it, so a pruned directory loads without lmshrink installed::

    AutoModelForSequenceClassification.from_pretrained(pruned_dir, trust_remote_code=True)
    AutoModelForTokenClassification.from_pretrained(pruned_tagger_dir, trust_remote_code=True)

Stock ``from_pretrained`` cannot build per-layer widths (transformers 5 dropped ``config.pruned_heads``), hence
these subclasses: they build the dense model, then shrink each layer's Linear modules to the widths in the
config, before the weights are loaded. A layer with no heads left computes ``LN(x + b_O)`` (spec §5.4: HF
attention cannot run with zero heads); a layer with no neurons left does so natively (zero-width Linear).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
)

HEADS_FIELD = "lmshrink_heads_per_layer"
FFN_FIELD = "lmshrink_ffn_per_layer"
"""Config fields holding the kept width of every layer; their presence marks a pruned model."""


@dataclass(frozen=True)
class EncoderLayout:
    """Where the prunable parts of an encoder live, by real HF module names (spec §5.11)."""

    layers: str
    """Path of the ModuleList of transformer blocks, from the task model's root."""
    attention_core: str
    """The module replaced by :class:`NoHeads` when a layer keeps no head."""
    query: str
    key: str
    value: str
    attention_output: str
    attention_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    num_heads_field: str
    """Config field holding the (dense) number of attention heads."""
    ffn_field: str
    """Config field holding the (dense) FFN width."""


_BERT_LIKE = dict(
    attention_core="attention.self", query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attention_output="attention.output.dense",
    attention_norm="attention.output.LayerNorm", ffn_in="intermediate.dense", ffn_out="output.dense",
    ffn_norm="output.LayerNorm", num_heads_field="num_attention_heads", ffn_field="intermediate_size",
)
LAYOUTS = {
    "bert": EncoderLayout(layers="bert.encoder.layer", **_BERT_LIKE),
    "roberta": EncoderLayout(layers="roberta.encoder.layer", **_BERT_LIKE),
    "distilbert": EncoderLayout(
        layers="distilbert.transformer.layer", attention_core="attention", query="attention.q_lin",
        key="attention.k_lin", value="attention.v_lin", attention_output="attention.out_lin",
        attention_norm="sa_layer_norm", ffn_in="ffn.lin1", ffn_out="ffn.lin2", ffn_norm="output_layer_norm",
        num_heads_field="n_heads", ffn_field="hidden_dim",
    ),
}


class NoHeads(nn.Module):
    """Stand-in for an attention module with every head pruned: the context is empty, so the output projection
    returns its bias and the sublayer computes ``LN(x + b_O)``. The empty Q/K/V (and, for DistilBERT, the
    output projection) stay as submodules under their original names, so the state dict keeps its keys."""

    def __init__(self, projections: dict[str, nn.Linear], output_name: str | None) -> None:
        super().__init__()
        for name, linear in projections.items():
            self.add_module(name, linear)
        self.output_name = output_name

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.output_name is not None:
            context = getattr(self, self.output_name)(context)
        return context, None


def is_sliced(config) -> bool:
    """Whether a config describes a physically pruned model (per-layer widths recorded)."""
    return getattr(config, HEADS_FIELD, None) is not None


def _relative(path: str, parent: str) -> str | None:
    return path[len(parent) + 1:] if path.startswith(parent + ".") else None


def _empty_linear(in_features: int, out_features: int, like: nn.Linear) -> nn.Linear:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features, bias=like.bias is not None, device=like.weight.device,
                         dtype=like.weight.dtype)


def set_layer_widths(layer: nn.Module, layout: EncoderLayout, head_dim: int, num_heads: int, ffn: int) -> None:
    """Replace one layer's projections by (uninitialised) Linears of the given widths, ready for weights."""
    hidden = layer.get_submodule(layout.query).in_features
    width = num_heads * head_dim
    for name, shape in ((layout.query, (hidden, width)), (layout.key, (hidden, width)),
                        (layout.value, (hidden, width)), (layout.attention_output, (width, hidden)),
                        (layout.ffn_in, (hidden, ffn)), (layout.ffn_out, (ffn, hidden))):
        old = layer.get_submodule(name)
        layer.set_submodule(name, _empty_linear(*shape, like=old))
    if num_heads == 0:
        replace_with_no_heads(layer, layout)


def replace_with_no_heads(layer: nn.Module, layout: EncoderLayout) -> None:
    """Swap the attention core of ``layer`` (whose Q/K/V already have width 0) for :class:`NoHeads`."""
    core = layout.attention_core
    projections = {}
    for path in (layout.query, layout.key, layout.value, layout.attention_output):
        name = _relative(path, core)
        if name is not None:
            projections[name] = layer.get_submodule(path)
    output_name = _relative(layout.attention_output, core)
    layer.set_submodule(core, NoHeads(projections, output_name))


def shrink_to_config(model: nn.Module) -> None:
    """Give every layer of ``model`` the widths its config records (no-op for a dense config)."""
    config = model.config
    if not is_sliced(config):
        return
    heads, ffn = getattr(config, HEADS_FIELD), getattr(config, FFN_FIELD)
    layout = LAYOUTS[config.model_type]
    layers = model.get_submodule(layout.layers)
    if len(heads) != len(layers) or len(ffn) != len(layers):
        raise ValueError(f"config has {len(heads)} head and {len(ffn)} FFN widths for {len(layers)} layers")
    head_dim = layers[0].get_submodule(layout.query).in_features // getattr(config, layout.num_heads_field)
    for layer, num_heads, width in zip(layers, heads, ffn):
        set_layer_widths(layer, layout, head_dim, num_heads, width)


def _pruned(base: type) -> type:
    """``Pruned<Base>``: ``base`` whose layers take the widths the config records when built."""

    def __init__(self, config) -> None:
        base.__init__(self, config)
        shrink_to_config(self)

    return type(f"Pruned{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__})


PrunedBertForSequenceClassification = _pruned(BertForSequenceClassification)
PrunedRobertaForSequenceClassification = _pruned(RobertaForSequenceClassification)
PrunedDistilBertForSequenceClassification = _pruned(DistilBertForSequenceClassification)
PrunedBertForTokenClassification = _pruned(BertForTokenClassification)
PrunedRobertaForTokenClassification = _pruned(RobertaForTokenClassification)
PrunedDistilBertForTokenClassification = _pruned(DistilBertForTokenClassification)

PRUNED_CLASSES = {
    ("bert", "sequence"): PrunedBertForSequenceClassification,
    ("roberta", "sequence"): PrunedRobertaForSequenceClassification,
    ("distilbert", "sequence"): PrunedDistilBertForSequenceClassification,
    ("bert", "token"): PrunedBertForTokenClassification,
    ("roberta", "token"): PrunedRobertaForTokenClassification,
    ("distilbert", "token"): PrunedDistilBertForTokenClassification,
}
"""(model type, task) -> the class that builds a pruned model of that architecture and head."""

AUTO_CLASSES = {"sequence": "AutoModelForSequenceClassification", "token": "AutoModelForTokenClassification"}


def head_task(names: list[str]) -> str:
    """``token`` when one of the architecture (class) names is a token classifier, else ``sequence``."""
    return "token" if any(name.endswith("ForTokenClassification") for name in names) else "sequence"


def pruned_class(model_type: str, task: str = "sequence") -> type:
    if (model_type, task) not in PRUNED_CLASSES:
        raise ValueError(f"no pruned {task} classifier for model type {model_type!r}; supported: "
                         f"{sorted({kind for kind, _ in PRUNED_CLASSES})}")
    return PRUNED_CLASSES[(model_type, task)]
