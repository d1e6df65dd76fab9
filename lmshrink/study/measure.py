"""Size, FLOPs and CPU latency of a study's models, measured the same way for every row.

FLOPs follow the pruning spec's model (encoder heads and neurons at a sequence length s = the mean token length
of the evaluation data's val split); quantization leaves FLOPs unchanged and unstructured zeros are counted as
dense work. Latency is measured when the report is written, for all models side by side in one process
(alternating rounds, median), on one fixed batch of 32 real val examples: stages run at different times and
under different machine load, so per-stage timings would not be comparable.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmshrink.backbones import accepted_inputs, load_sequence_classifier
from lmshrink.data.loading import mean_length
from lmshrink.pruning.encoder.arch import layout_of, shape_of
from lmshrink.pruning.flops import encoder_flops
from lmshrink.pruning.encoder.run import count_parameters
from lmshrink.pruning.encoder.sliced_modeling import FFN_FIELD, HEADS_FIELD, is_sliced
from lmshrink.quantize import apply
from lmshrink.quantize.compiled import compile_for_inference
from lmshrink.quantize.size_latency import alternating_latency_ms, memory_bytes


def encoder_gflops(model: torch.nn.Module, seq_len: float) -> float:
    shape = shape_of(model)
    if is_sliced(model.config):
        return encoder_flops(shape, seq_len, getattr(model.config, HEADS_FIELD), getattr(model.config, FFN_FIELD)) / 1e9
    return encoder_flops(shape, seq_len) / 1e9


class StudyMeasure:
    """Measurements bound to the study's evaluation data (for s and the latency batch)."""

    def __init__(self, eval_config: str, common_args: tuple[str, ...] = ()) -> None:
        """The evaluation data as every stage's ``train.py test`` sees it: the evaluation config with the study's
        ``common_args`` (and ``--train-arg``) applied by the same parser, not re-read by hand. Its task (sequence or
        token classification) and number of labels say which head every model is loaded with."""
        from lmshrink.cli import check_args, instantiate_datamodule

        datamodule = instantiate_datamodule(check_args("test", ["--config", str(eval_config), *common_args]))
        datamodule.setup("test")
        val = datamodule.datasets["val"]
        self.seq_len = mean_length(val)
        self.batch = datamodule.val_dataloader().collate_fn([val[index] for index in range(min(32, len(val)))])
        self.num_labels, self.task = datamodule.hparams.num_labels, datamodule.task

    def load(self, model_dir: str | Path, scheme: str | None) -> torch.nn.Module:
        model = load_sequence_classifier(model_dir, self.num_labels, task=self.task).eval()
        if scheme is not None:
            apply(model, scheme)  # the head stays in float, as the Quantize callback keeps it
        return model

    def __call__(self, model_dir: Path, scheme: str | None) -> dict:
        """Parameters and encoder GFLOPs (at s) of the float model, and the size in memory of the stage's model
        (quantized when the stage is)."""
        model = self.load(model_dir, None)
        layout_of(model)  # clear error for an architecture the FLOPs model does not know
        result = {"params": count_parameters(model), "seq_len": self.seq_len,
                  "gflops": encoder_gflops(model, self.seq_len)}
        if scheme is not None:
            apply(model, scheme)  # in place: the float numbers are taken
        result["size_mb"] = memory_bytes(model) / 2**20
        return result

    def latencies(self, models: dict[str, tuple[str, str | None]], rounds: int = 5, repeats: int = 3,
                  compiled: bool = False) -> dict[str, float]:
        """Median ms per forward of every ``{key: (model_dir, scheme)}``, in alternating rounds; ``compiled``: each
        through ``torch.compile`` (compiled in the untimed warm-up call)."""
        runs = {}
        for key, (directory, scheme) in models.items():
            model = self.load(directory, scheme)
            inputs = {name: self.batch[name] for name in accepted_inputs(model) if name in self.batch}
            runs[key] = (compile_for_inference(model) if compiled else model, inputs)
        return alternating_latency_ms(runs, rounds, repeats)
