"""``Quantize``: post-training quantization of any lmshrink module at validate/test time, measured per group.

    python train.py test --config configs/teacher/stereoset_minilm.yaml --ckpt_path <teacher.ckpt> \\
        --trainer.callbacks+=lmshrink.callbacks.Quantize --trainer.callbacks.scheme bnb-int8

When evaluation starts (after the checkpoint is loaded) the module's ``model`` is quantized in place; a
float copy is kept and run on the same batches, so the report compares the two on identical data in one
process: size in memory and on disk, latency at batch 1 and 32, and the per-group comparison of the
quantized model with the float one through the same :class:`~lmshrink.metrics.comparison.GroupComparison` as
GroupMetrics uses for a teacher or a dense model (accuracy, calibration, flips, McNemar/Holm, intervals; one
record layout, reference ``float``). It goes to the loggers (``quant/*`` scalars, a ``wandb.Table`` on W&B) and
to ``<log dir>/quantization_<scheme>_<stage>.json``. Counts are summed across DDP ranks.

Contract with the module: it has ``model`` (the network to quantize) and ``forward(batch) -> logits`` that
uses ``self.model``; evaluation steps return ``preds`` and ``logits``.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmshrink.cards import add_measurement
from lmshrink.callbacks.group_metrics import comparison_for
from lmshrink.errors import OptionError
from lmshrink.metrics.calibration_error import N_BINS
from lmshrink.metrics.comparison import GroupComparison, check_comparison_options
from lmshrink.machine import cpu_line
from lmshrink.modules.base import LmshrinkModule
from lmshrink.modules.model_cards import plain_settings, start_model_card
from lmshrink.paths import refuse_non_empty, write_new_json
from lmshrink.datamodules.splits import SplitsDataModule
from lmshrink.quantize import SCHEMES, apply, check_supported, save_quantized
from lmshrink.quantize.apply import CALIBRATION_BATCH_SIZE, CALIBRATION_SAMPLES
from lmshrink.quantize.compiled import first_call_seconds
from lmshrink.quantize.embeddings import EmbeddingBits
from lmshrink.quantize.saved_model import NOT_RELOADABLE
from lmshrink.quantize.schemes import SchemeName, check_skip_modules, cpu_only
from lmshrink.quantize.size_latency import alternating_latency_ms, disk_bytes, latency_ms, memory_bytes

EVAL_FNS = {TrainerFn.VALIDATING: "val", TrainerFn.TESTING: "test"}


@contextmanager
def _using(pl_module: LightningModule, model: torch.nn.Module):
    """Run the module's own forward with another network in place of ``pl_module.model``."""
    original = pl_module.model
    pl_module.model = model
    try:
        yield
    finally:
        pl_module.model = original


class Quantize(Callback):
    """Post-training quantization at ``validate``/``test``: the float model runs on the same batches, so size,
    latency and the per-group accuracy deltas compare like with like."""

    def __init__(
        self,
        scheme: SchemeName = "bnb-int8",
        skip_modules: list[str] | None = None,
        embeddings: EmbeddingBits = "float",
        compile: bool | None = None,
        calibration_samples: int | None = None,
        calibration_seed: int | None = None,
        compare_to_float: bool = True,
        latency_batch_sizes: list[int] | None = None,
        latency_seq_len: int | None = None,
        latency_repeats: int | None = None,
        save_dir: str | None = None,
        bootstrap_resamples: int | None = None,
        bootstrap_seed: int | None = None,
        calibration_bins: int = N_BINS,
    ) -> None:
        """
        Args:
            scheme: One of ``lmshrink.quantize.SCHEMES`` (bnb-int8, bnb-nf4, bnb-fp4, torchao-int8-dynamic,
                torchao-int8-weight, torchao-int4-weight, torchao-int4-tinygemm (CUDA only), dynamic-int8 (CPU only), bf16,
                static-int8-x86 (CPU only)).
            skip_modules: Linear layers kept in float (by name or module prefix); default: the head (``[classifier]``).
            embeddings: Also quantize the embedding tables weight-only: ``int8`` (a scale per row) or ``int4``
                (two values per byte, a scale per 32 values); ``float`` keeps them (a tied LM head's table always
                stays float). Without it the size ratio stops near 0.6 on small encoders.
            compile: Run the quantized model through ``torch.compile`` (inductor, freezing), where torchao's and
                oneDNN's int8 / bf16 kernels are fused, into one graph for every input shape (the evaluation's
                batches vary in length; batch size 1 gets a graph of its own); the first call per batch size is
                reported apart from the steady-state latency (it compiles where the size needs a new graph).
                Default: on for ``static-int8-x86`` (which only exists compiled), off otherwise.
            calibration_samples: ``static-int8-x86`` only: training sentences (a seeded sample, as pruning's)
                that fix the int8 activation scales; default 128.
            calibration_seed: ``static-int8-x86`` only: seed of that sample; default 0.
            compare_to_float: Also run the float model on every batch and report per-group deltas.
            latency_batch_sizes: Batch sizes timed (synthetic inputs of ``latency_seq_len`` tokens); default [1, 32].
                ``[]`` times nothing and records sizes only (``lmshrink study`` does so: it times every model side by
                side when it writes its report, and a compiled scheme would otherwise compile twice more here).
            latency_seq_len: Tokens per sequence in the latency measurement; default 64.
            latency_repeats: Timed forward passes per model and batch size (the median is reported); default 10. With
                ``compare_to_float`` (the default) the float and the quantized model are timed call by call in
                alternation, so that a drift in the machine's speed hits both alike; without it the float model
                is timed before quantization.
            save_dir: Save the quantized model there (an empty or new directory) for reloading.
            bootstrap_resamples: Token tagging (entity F1) only, as GroupMetrics: resamples of the sentences for
                the F1 intervals (default 1000); refused with sequence classification (closed-form intervals).
            bootstrap_seed: Token tagging only: seed of the resampling (default 0).
            calibration_bins: Equal-width confidence bins of the ECE.
        """
        check_comparison_options(bootstrap_resamples, calibration_bins, "Quantize")
        check_supported(scheme, None)  # unknown names fail at config time; device checks come in setup
        sizes = [1, 32] if latency_batch_sizes is None else latency_batch_sizes
        if not sizes:  # nothing timed: an option of the timing would be silently ignored
            for name, value in (("latency_seq_len", latency_seq_len), ("latency_repeats", latency_repeats)):
                if value is not None:
                    raise OptionError(f"Quantize: {name}={value} with latency_batch_sizes=[] (nothing timed); drop "
                                      f"one of the two")
        seq_len = 64 if latency_seq_len is None else latency_seq_len
        repeats = 10 if latency_repeats is None else latency_repeats
        if min(sizes, default=1) < 1 or seq_len < 1 or repeats < 1:
            raise OptionError(f"Quantize: latency_batch_sizes={sizes}, latency_seq_len={seq_len} and "
                              f"latency_repeats={repeats} must all be >= 1")
        calibrated = SCHEMES[scheme].calibrated
        if calibrated and compile is False:
            raise OptionError(f"Quantize: compile=False with scheme {scheme}: its int8 kernels exist only compiled")
        if calibrated and save_dir is not None:
            raise OptionError(f"Quantize: save_dir with scheme {scheme}: a compiled graph cannot be saved and "
                              f"reloaded; keep the float checkpoint and quantize again")
        if save_dir is not None and scheme in NOT_RELOADABLE:  # refused now, not after quantizing and timing
            raise OptionError(f"Quantize: save_dir with scheme {scheme}: {NOT_RELOADABLE[scheme]}; drop save_dir "
                              f"or choose a scheme that reloads")
        if not calibrated and (calibration_samples is not None or calibration_seed is not None):
            option = "calibration_samples" if calibration_samples is not None else "calibration_seed"
            raise OptionError(f"Quantize: {option} is read only by calibrated schemes (static-int8-x86), not {scheme}")
        if calibration_samples is not None and calibration_samples < 1:
            raise OptionError(f"Quantize: calibration_samples={calibration_samples} must be >= 1")
        self.scheme = scheme
        self.compile = calibrated if compile is None else compile
        self.calibration_samples = calibration_samples or CALIBRATION_SAMPLES
        self.calibration_seed = calibration_seed or 0
        self.skip_modules = skip_modules  # None: the model's head (lmshrink.quantize.default_skip)
        self.embeddings = embeddings
        self.compare_to_float = compare_to_float
        self.latency_batch_sizes = sizes
        self.latency_seq_len = seq_len
        self.latency_repeats = repeats
        self.save_dir = save_dir
        self.bootstrap_resamples, self.bootstrap_seed = bootstrap_resamples, bootstrap_seed
        self.calibration_bins = calibration_bins
        self.float_model: torch.nn.Module | None = None
        self.comparison: GroupComparison | None = None
        self.record: dict = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            raise ValueError(
                "Quantize is post-training quantization for `validate`/`test`; for training use "
                "lmshrink.callbacks.QuantizationAwareTraining"
            )
        try:
            check_supported(self.scheme, trainer.strategy.root_device)
        except ValueError as exc:
            hint = "; evaluate it on the CPU: --trainer.accelerator cpu" if cpu_only(self.scheme) else ""
            raise OptionError(f"--trainer.callbacks.scheme: {exc}{hint}") from None
        if not isinstance(pl_module, LmshrinkModule):
            raise OptionError(f"Quantize: {type(pl_module).__name__} is not an lmshrink module (its `model` network and "
                              f"`model_inputs` are what Quantize quantizes and feeds)")
        if pl_module.is_causal_lm:
            raise OptionError(f"Quantize measures classifiers per group; {type(pl_module).__name__} works on a causal "
                              f"LM: quantize it with the module's own options (GenerativeAudit: --model.quantize or "
                              f"--model.model_scheme)")
        refuse_non_empty(self.save_dir, "save_dir")
        if not isinstance(trainer.datamodule, SplitsDataModule):
            raise OptionError(f"Quantize measures per group (and calibrates) on an lmshrink datamodule's splits; "
                              f"{type(trainer.datamodule).__name__} is not one")
        if self.skip_modules is not None:  # a misspelt name would keep nothing in float, silently
            check_skip_modules(pl_module.model, self.skip_modules, "Quantize.skip_modules")
        # built now, so that an option the data's comparison does not read is refused before any work
        self.comparison = comparison_for(trainer.datamodule, "float" if self.compare_to_float else None,
                                         self.calibration_bins, self.bootstrap_resamples, self.bootstrap_seed,
                                         owner="Quantize")

    # ------------------------------------------------------------------------------------------- quantize
    def _latency_inputs(self, pl_module: LightningModule, batch_size: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        shape = (batch_size, self.latency_seq_len)
        inputs = {
            "input_ids": torch.randint(1000, 2000, shape, generator=generator),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long),
        }
        return {name: inputs[name].to(pl_module.device) for name in pl_module.model_inputs}

    @staticmethod
    def _sizes(stored: torch.nn.Module) -> dict:
        return {"memory_mb": memory_bytes(stored) / 2**20, "disk_mb": disk_bytes(stored) / 2**20}

    def _measure(self, model: torch.nn.Module, pl_module: LightningModule, stored: torch.nn.Module,
                 compiled: bool = False, beside: torch.nn.Module | None = None) -> tuple[dict, dict]:
        """Size of ``stored`` (the module holding the weights) and latency of ``model`` (maybe its compiled form);
        with ``beside``, the latency of that model too, timed in alternation with ``model`` (its stats second)."""
        stats, stats_beside = self._sizes(stored), {}
        for batch_size in self.latency_batch_sizes:
            inputs = self._latency_inputs(pl_module, batch_size)
            if compiled:  # the first call compiles: reported apart
                stats[f"first_call_s_bs{batch_size}"] = first_call_seconds(model, inputs)
            if beside is None:
                stats[f"latency_ms_bs{batch_size}"] = latency_ms(model, inputs, repeats=self.latency_repeats)
                continue
            timed = alternating_latency_ms({"model": (model, inputs), "beside": (beside, inputs)},
                                           rounds=self.latency_repeats, repeats=1)
            stats[f"latency_ms_bs{batch_size}"] = timed["model"]
            stats_beside[f"latency_ms_bs{batch_size}"] = timed["beside"]
        return stats, stats_beside

    def _calibration(self, trainer: Trainer, pl_module: LmshrinkModule) -> list[dict] | None:
        """A calibrated scheme's batches: the datamodule's seeded sample of the training split (the same on every
        rank, so every rank builds the same quantized model); None for the other schemes."""
        if not SCHEMES[self.scheme].calibrated:
            return None
        batches = trainer.datamodule.seeded_sample("train", self.calibration_samples, self.calibration_seed,
                                                   batch_size=CALIBRATION_BATCH_SIZE, keys=pl_module.model_inputs)
        return [{key: value.to(pl_module.device) for key, value in batch.items()} for batch in batches]

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        model = pl_module.model.eval()
        if self.compare_to_float:
            self.float_model = copy.deepcopy(model)
        float_stats = {}
        if trainer.is_global_zero:  # measured now, before quantizing in place
            if self.float_model is not None:  # its latency comes later, timed beside the quantized model
                float_stats = self._sizes(model)
            else:
                float_stats = self._measure(model, pl_module, model)[0]
        quantized = apply(model, self.scheme, embeddings=self.embeddings,
                          calibration=self._calibration(trainer, pl_module), compile=self.compile,
                          skip=self.skip_modules, any_shape=True)  # the evaluation's batches vary in shape
        pl_module.model, result = quantized.runnable, quantized.result
        quant_stats = {}
        if trainer.is_global_zero:
            quant_stats, float_latency = self._measure(quantized.runnable, pl_module, quantized.weights, self.compile,
                                                       beside=self.float_model)
            float_stats |= float_latency
        rank_zero_info(
            f"Quantize[{self.scheme}]: {len(result.quantized)} Linear layers and {len(result.embeddings)} embedding "
            f"tables quantized; kept in float: "
            + (", ".join(f"{name} ({why})" for name, why in result.skipped.items()) or "none")
        )
        self.comparison = self.comparison.to(pl_module.device)
        scheme = SCHEMES[self.scheme]
        self.record = {
            "scheme": self.scheme, "backend": scheme.backend, "description": scheme.description,
            "device": str(pl_module.device), "quantized_layers": result.quantized, "skipped_layers": result.skipped,
            "embeddings": self.embeddings, "quantized_embeddings": result.embeddings, "compiled": self.compile,
            "int8_mixed_bf16": bool(getattr(quantized.runnable, "mixed_bf16", False)),
            "calibration": ({"samples": self.calibration_samples, "seed": self.calibration_seed, "split": "train"}
                            if scheme.calibrated else None),
            "size_latency": {"float": float_stats, "quantized": quant_stats, "cpu": cpu_line()},
        }
        if self.save_dir and trainer.is_global_zero:
            source = pl_module.source_model if isinstance(pl_module, LmshrinkModule) else ""
            save_quantized(model, self.scheme, quantized.skip, self.save_dir, source=source,
                           embeddings=self.embeddings)
            settings = {key: self.record[key] for key in ("embeddings", "skipped_layers", "calibration", "compiled")}
            start_model_card(trainer, pl_module, self.save_dir,
                             {"parent": source, "method": f"Quantization, {self.scheme} ({scheme.description})",
                              "family": "quantization", "method_tag": self.scheme,
                              "settings": plain_settings(settings)}, model,
                             {"trust_remote_code": False, "quantized": self.scheme, "source": source})

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._start(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module)

    # --------------------------------------------------------------------------------------------- measure
    def _update(self, pl_module: LightningModule, outputs, batch) -> None:
        if self.comparison is None:
            return
        logits = outputs.get("logits")
        if logits is None:
            with torch.no_grad():
                logits = pl_module(batch)
        float_logits = None
        if self.float_model is not None:
            with torch.no_grad(), _using(pl_module, self.float_model):
                float_logits = pl_module(batch)
        self.comparison.observe({"preds": outputs["preds"], "logits": logits, "reference_logits": float_logits,
                                 "reference_preds": None if float_logits is None else float_logits.argmax(-1)}, batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._update(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(pl_module, outputs, batch)

    def _finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stage = EVAL_FNS[trainer.state.fn]
        results = self.comparison.compute()  # summed over ranks
        self.comparison.reset()
        self.record["stage"] = stage
        scalars = self.comparison.scalars(results, "quant", per_group=False)
        pl_module.log_dict({key: torch.tensor(value) for key, value in scalars.items()}, sync_dist=False)
        self._report(trainer, stage, results)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and self.comparison is not None:
            self._finish(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.comparison is not None:
            self._finish(trainer, pl_module)

    def _report(self, trainer: Trainer, stage: str, results: dict) -> None:
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        self._write(trainer, stage, log_dir, results)

    @rank_zero_only
    def _write(self, trainer: Trainer, stage: str, log_dir: str | None, results: dict) -> None:
        report = self.comparison.report(
            results,
            f"Per-group {stage} {self.comparison.metric}, {self.scheme} (float = the model before quantization)")
        record = self.record | report.record
        float_stats, quant_stats = record["size_latency"]["float"], record["size_latency"]["quantized"]
        ratios = {f"{key}_ratio": quant_stats[key] / float_stats[key] for key in float_stats}
        record["size_latency"]["ratios_quantized_over_float"] = ratios
        lines = [f"Quantize[{self.scheme}] {stage}: " + ", ".join(
            f"{key} {float_stats[key]:.1f} -> {quant_stats[key]:.1f}" for key in float_stats)]
        first_calls = {key: value for key, value in quant_stats.items() if key.startswith("first_call_s")}
        if first_calls:  # compilation, kept out of the latency figures
            lines.append("compiled: first call per batch size (compilation where it needs a new graph) " + ", ".join(
                f"{key.removeprefix('first_call_s_')} {value:.1f} s" for key, value in first_calls.items()))
        rank_zero_info("\n" + report.table + "\n" + "\n".join(lines))
        for logger in trainer.loggers:
            logger.log_metrics({f"quant/{key}": value for key, value in {**ratios, **quant_stats}.items()},
                               step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"quant/{self.scheme}/{stage}_groups", columns=report.columns, data=report.data)
        source = write_new_json(log_dir, f"quantization_{self.scheme}_{stage}", record) if log_dir is not None else None
        if self.save_dir:  # the model measured is the one saved there (the callback quantized it itself)
            card = add_measurement(self.save_dir, stage, source, record)
            if card is not None:
                rank_zero_info(f"[lmshrink] model card updated: {card}")
