"""Size, FLOPs and CPU latency of a study's models, measured the same way for every row.

FLOPs follow the pruning spec's model (encoder heads and neurons at a sequence length s = the mean token length
of the evaluation data's val split); quantization leaves FLOPs unchanged and unstructured zeros are counted as
dense work. Latency is the median forward time on one fixed batch of 32 real val examples.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from lmshrink.backbones import load_sequence_classifier
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.modules.teacher import accepted_inputs
from lmshrink.pruning.arch import layout_of, shape_of
from lmshrink.pruning.flops import encoder_flops
from lmshrink.pruning.run import count_parameters, mean_length
from lmshrink.pruning.sliced_modeling import FFN_FIELD, HEADS_FIELD, is_sliced
from lmshrink.quantize import quantize_model
from lmshrink.quantize.measure import latency_ms, memory_bytes


def encoder_gflops(model: torch.nn.Module, seq_len: float) -> float:
    shape = shape_of(model)
    if is_sliced(model.config):
        return encoder_flops(shape, seq_len, getattr(model.config, HEADS_FIELD), getattr(model.config, FFN_FIELD)) / 1e9
    return encoder_flops(shape, seq_len) / 1e9


def make_measure(eval_config: str, num_labels: int = 3, repeats: int = 10) -> Callable[[Path, str | None], dict]:
    """A ``measure(model_dir, scheme)`` bound to the evaluation data (for s and the latency batch)."""
    config = yaml.safe_load(Path(eval_config).read_text()) or {}
    data_args = dict((config.get("data") or {}).get("init_args") or {})
    datamodule = GroupedTextDataModule(**data_args)
    datamodule.setup("test")
    val = datamodule.datasets["val"]
    seq_len = mean_length(val)
    batch = datamodule.val_dataloader().collate_fn([val[index] for index in range(min(32, len(val)))])

    def measure(model_dir: Path, scheme: str | None) -> dict:
        model = load_sequence_classifier(model_dir, num_labels).eval()
        layout_of(model)  # clear error for an architecture the FLOPs model does not know
        result = {"params": count_parameters(model), "seq_len": seq_len, "gflops": encoder_gflops(model, seq_len)}
        if scheme is not None:
            model = copy.deepcopy(model)
            quantize_model(model, scheme, skip_modules=["classifier"])
        inputs = {key: batch[key] for key in accepted_inputs(model) if key in batch}
        with torch.inference_mode():
            result["latency_ms"] = latency_ms(model, inputs, repeats=repeats)
        result["size_mb"] = memory_bytes(model) / 2**20
        return result

    return measure
