"""Size, FLOPs and CPU latency of a study's models, measured the same way for every row.

FLOPs follow the pruning spec's model (encoder heads and neurons at a sequence length s = the mean token length
of the evaluation data's val split); quantization leaves FLOPs unchanged and unstructured zeros are counted as
dense work. Latency is measured when the report is written, for all models side by side in one process
(alternating rounds, median), on one fixed batch of 32 real val examples: stages run at different times and
under different machine load, so per-stage timings would not be comparable. A calibrated scheme
(``static-int8-x86``) is rebuilt on its stage's seeded calibration sample and timed compiled, as it runs.

Models that run the same computation on other values are timed once, and each of them gets that time: the same
class, attention implementation and parameter shapes and dtypes, under the same scheme (:func:`timing_key`), e.g.
one seed's teacher and another's, a teacher and its unstructured-pruned copy (dense kernels do the same work on
zeros), the static int8 graphs of three calibration samples (one compilation instead of three). A dense kernel's
time does not depend on the values it multiplies; the sliced models of structured pruning differ in shapes from
seed to seed and are timed each.
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
from lmshrink.quantize.apply import CALIBRATION_BATCH_SIZE, CALIBRATION_SAMPLES, Quantized, apply
from lmshrink.quantize.compiled import CompiledForInference, compile_for_inference
from lmshrink.quantize.size_latency import alternating_latency_ms, memory_bytes


def encoder_gflops(model: torch.nn.Module, seq_len: float) -> float:
    shape = shape_of(model)
    if is_sliced(model.config):
        return encoder_flops(shape, seq_len, getattr(model.config, HEADS_FIELD), getattr(model.config, FFN_FIELD)) / 1e9
    return encoder_flops(shape, seq_len) / 1e9


class StudyMeasure:
    """Measurements bound to the study's evaluation data (for s, the latency batch and a calibrated scheme's
    sample)."""

    def __init__(self, eval_config: str, common_args: tuple[str, ...] = ()) -> None:
        """The evaluation data as every stage's ``train.py test`` sees it: the evaluation config with the study's
        ``common_args`` (and ``--train-arg``) applied by the same parser, not re-read by hand. Its task (sequence or
        token classification) and number of labels say which head every model is loaded with."""
        from lmshrink.cli import check_args, instantiate_datamodule

        self.datamodule = instantiate_datamodule(check_args("test", ["--config", str(eval_config), *common_args]))
        self.datamodule.setup("test")
        val = self.datamodule.datasets["val"]
        self.seq_len = mean_length(val)
        self.batch = self.datamodule.val_dataloader().collate_fn([val[index] for index in range(min(32, len(val)))])
        self.num_labels, self.task = self.datamodule.hparams.num_labels, self.datamodule.task

    def load(self, model_dir: str | Path) -> torch.nn.Module:
        """The stage's float model, with the head the evaluation data needs."""
        return load_sequence_classifier(model_dir, self.num_labels, task=self.task).eval()

    def quantize(self, model: torch.nn.Module, scheme: str, calibration_seed: int | None = None,
                 compiled: bool = False) -> Quantized:
        """``model`` (changed in place) quantized by :func:`~lmshrink.quantize.apply` as its evaluation quantized it:
        the head in float; a calibrated scheme on the same seeded training sample as the Quantize callback, compiled,
        since its int8 kernels exist only compiled."""
        calibration = None
        if calibration_seed is not None:
            calibration = self.datamodule.seeded_sample("train", CALIBRATION_SAMPLES, calibration_seed,
                                                        CALIBRATION_BATCH_SIZE, accepted_inputs(model))
        return apply(model, scheme, calibration=calibration, compile=True if compiled else None)

    def __call__(self, model_dir: Path) -> dict:
        """Parameters, encoder GFLOPs (at s) and size in memory of the float model. A quantized stage's size is
        the one its evaluation's Quantize callback measured (``memory_bytes`` of the same quantized weights), not
        rebuilt here: a calibrated scheme would calibrate and convert a second time."""
        model = self.load(model_dir)
        layout_of(model)  # clear error for an architecture the FLOPs model does not know
        return {"params": count_parameters(model), "seq_len": self.seq_len,
                "gflops": encoder_gflops(model, self.seq_len), "size_mb": memory_bytes(model) / 2**20}

    def latencies(self, models: dict[str, tuple[str, str | None, int | None]], rounds: int = 5, repeats: int = 3,
                  compiled: bool = False) -> dict[str, tuple[float, bool]]:
        """(median ms per forward, whether compiled) of every ``{key: (model_dir, scheme, calibration_seed)}``, in
        alternating rounds; ``compiled``: every model through ``torch.compile`` (a calibrated scheme always is);
        compilation happens in the untimed warm-up call. Models of one :func:`timing_key` are timed once (the
        first of them)."""
        runs, was_compiled, timed_as = {}, {}, {}
        for key, (directory, scheme, seed) in models.items():
            model = self.load(directory)
            same = timed_as[key] = timing_key(model, scheme)
            if same in runs:
                continue
            inputs = {name: self.batch[name] for name in accepted_inputs(model) if name in self.batch}
            if scheme is not None:
                runnable = self.quantize(model, scheme, seed, compiled).runnable
            else:
                runnable = compile_for_inference(model) if compiled else model
            was_compiled[same] = isinstance(runnable, CompiledForInference)
            runs[same] = (runnable, inputs)
        times = alternating_latency_ms(runs, rounds, repeats)
        return {key: (times[same], was_compiled[same]) for key, same in timed_as.items()}


def timing_key(model: torch.nn.Module, scheme: str | None) -> tuple:
    """What a forward's time depends on: the model's class and attention implementation, the names, shapes and
    dtypes of its parameters and buffers, and the quantization scheme; not their values."""
    tensors = tuple((name, tuple(tensor.shape), str(tensor.dtype)) for name, tensor in model.state_dict().items())
    return type(model).__name__, getattr(model.config, "_attn_implementation", None), tensors, scheme
