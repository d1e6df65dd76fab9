"""``Quantize``: post-training quantization of any lmshrink module at validate/test time, measured per group.

    python train.py test --config configs/teacher/stereoset_minilm.yaml --ckpt_path <teacher.ckpt> \\
        --trainer.callbacks+=lmshrink.callbacks.Quantize --trainer.callbacks.scheme bnb-int8

When evaluation starts (after the checkpoint is loaded) the module's ``model`` is quantized in place; a
float copy is kept and run on the same batches, so the report compares the two on identical data in one
process: size in memory and on disk, latency at batch 1 and 32, average / worst-group / per-group accuracy
and the per-group delta (quantized minus float). It goes to the loggers (a ``wandb.Table`` on W&B) and to
``<log dir>/quantization_<scheme>_<stage>.json``. Accuracy counts are summed across DDP ranks.

Contract with the module: it has ``model`` (the network to quantize) and ``forward(batch) -> logits`` that
uses ``self.model``; evaluation steps return ``preds``.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmshrink.errors import OptionError
from lmshrink.metrics.groups import GroupAccuracy
from lmshrink.modules.base import LmshrinkModule
from lmshrink.metrics.report import format_group_table, group_deltas, group_rows, summary
from lmshrink.paths import refuse_non_empty, write_new_json
from lmshrink.quantize import SCHEMES, check_supported, quantize_model, save_quantized
from lmshrink.quantize.measure import disk_bytes, latency_ms, memory_bytes
from lmshrink.quantize.schemes import KEEP_IN_FLOAT, SchemeName

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
        compare_to_float: bool = True,
        latency_batch_sizes: list[int] | None = None,
        latency_seq_len: int = 64,
        latency_repeats: int = 10,
        save_dir: str | None = None,
    ) -> None:
        """
        Args:
            scheme: One of ``lmshrink.quantize.SCHEMES`` (bnb-int8, bnb-nf4, bnb-fp4, torchao-int8-dynamic,
                torchao-int8-weight, torchao-int4-weight, torchao-int4-tinygemm (CUDA only), dynamic-int8).
            skip_modules: Linear layers kept in float (by name or module prefix); default ``[classifier]``.
            compare_to_float: Also run the float model on every batch and report per-group deltas.
            latency_batch_sizes: Batch sizes timed (synthetic inputs of ``latency_seq_len`` tokens); default [1, 32].
            latency_seq_len: Tokens per sequence in the latency measurement.
            latency_repeats: Timed forward passes per measurement (the median is reported).
            save_dir: Save the quantized model there (an empty or new directory) for reloading.
        """
        check_supported(scheme, "cuda")  # unknown names fail at config time; device checks come in setup
        sizes = latency_batch_sizes or [1, 32]
        if min(sizes) < 1 or latency_seq_len < 1 or latency_repeats < 1:
            raise OptionError(f"Quantize: latency_batch_sizes={sizes}, latency_seq_len={latency_seq_len} and "
                              f"latency_repeats={latency_repeats} must all be >= 1")
        self.scheme = scheme
        self.skip_modules = list(KEEP_IN_FLOAT) if skip_modules is None else list(skip_modules)
        self.compare_to_float = compare_to_float
        self.latency_batch_sizes = latency_batch_sizes or [1, 32]
        self.latency_seq_len = latency_seq_len
        self.latency_repeats = latency_repeats
        self.save_dir = save_dir
        self.float_model: torch.nn.Module | None = None
        self.metrics: dict[str, GroupAccuracy] = {}
        self.record: dict = {}
        self._table = ""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            raise ValueError(
                "Quantize is post-training quantization for `validate`/`test`; for training use "
                "lmshrink.callbacks.QuantizationAwareTraining"
            )
        check_supported(self.scheme, trainer.strategy.root_device)
        if not isinstance(getattr(pl_module, "model", None), torch.nn.Module):
            raise TypeError(f"{type(pl_module).__name__} has no `model` network for Quantize to quantize")
        refuse_non_empty(self.save_dir, "save_dir")

    # ------------------------------------------------------------------------------------------- quantize
    def _latency_inputs(self, pl_module: LightningModule, batch_size: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        shape = (batch_size, self.latency_seq_len)
        inputs = {
            "input_ids": torch.randint(1000, 2000, shape, generator=generator),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long),
        }
        names = pl_module.model_inputs if isinstance(pl_module, LmshrinkModule) else ["input_ids", "attention_mask"]
        return {name: inputs[name].to(pl_module.device) for name in names}

    def _measure(self, model: torch.nn.Module, pl_module: LightningModule) -> dict:
        stats = {"memory_mb": memory_bytes(model) / 2**20, "disk_mb": disk_bytes(model) / 2**20}
        for batch_size in self.latency_batch_sizes:
            inputs = self._latency_inputs(pl_module, batch_size)
            stats[f"latency_ms_bs{batch_size}"] = latency_ms(model, inputs, repeats=self.latency_repeats)
        return stats

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        model = pl_module.model.eval()
        if self.compare_to_float:
            self.float_model = copy.deepcopy(model)
        float_stats = self._measure(model, pl_module) if trainer.is_global_zero else {}
        result = quantize_model(model, self.scheme, self.skip_modules)
        quant_stats = self._measure(model, pl_module) if trainer.is_global_zero else {}
        rank_zero_info(
            f"Quantize[{self.scheme}]: {len(result.quantized)} Linear layers quantized; kept in float: "
            + (", ".join(f"{name} ({why})" for name, why in result.skipped.items()) or "none")
        )
        datamodule = trainer.datamodule
        self.group_names = list(datamodule.group_names)
        self.metrics = {
            kind: GroupAccuracy(len(self.group_names), datamodule.num_labels).to(pl_module.device)
            for kind in (["quantized", "float"] if self.compare_to_float else ["quantized"])
        }
        scheme = SCHEMES[self.scheme]
        self.record = {
            "scheme": self.scheme, "backend": scheme.backend, "description": scheme.description,
            "device": str(pl_module.device), "quantized_layers": result.quantized, "skipped_layers": result.skipped,
            "float": float_stats, "quantized": quant_stats,
        }
        if self.save_dir and trainer.is_global_zero:
            save_quantized(model, self.scheme, self.skip_modules, self.save_dir,
                           source=pl_module.source_model if isinstance(pl_module, LmshrinkModule) else "")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._start(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer, pl_module)

    # --------------------------------------------------------------------------------------------- measure
    def _update(self, pl_module: LightningModule, outputs, batch) -> None:
        if not self.metrics:
            return
        self.metrics["quantized"].update(outputs["preds"], batch["labels"], batch["groups"])
        if self.float_model is not None:
            with torch.no_grad(), _using(pl_module, self.float_model):
                self.metrics["float"].update(pl_module(batch), batch["labels"], batch["groups"])

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._update(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(pl_module, outputs, batch)

    def _finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stage = EVAL_FNS[trainer.state.fn]
        results = {kind: metric.compute() for kind, metric in self.metrics.items()}  # summed over ranks
        quantized = results["quantized"]
        self.record.update(stage=stage, accuracy={kind: summary(r) for kind, r in results.items()})
        rows = {kind: group_rows(self.group_names, r) for kind, r in results.items()}
        groups = [{"group": row.group, "n": row.n, "quantized_acc": row.accuracy} for row in rows["quantized"]]
        if "float" in rows:
            deltas = group_deltas(rows["quantized"], rows["float"])
            for entry, float_row, delta in zip(groups, rows["float"], deltas):
                entry.update(float_acc=float_row.accuracy, delta_to_float=delta)
        self.record["groups"] = groups
        self._table = format_group_table(
            rows["quantized"], f"Per-group {stage} accuracy, {self.scheme} (float = the model before quantization)",
            summary(quantized), "float" if "float" in rows else None, rows.get("float"),
            summary(results["float"]) if "float" in results else None)
        scalars = {f"quant/{key}": value for key, value in summary(quantized).items()}
        if "float" in results:
            for key, value in summary(results["float"]).items():
                scalars[f"quant/float_{key}"] = value
        pl_module.log_dict({key: torch.tensor(value) for key, value in scalars.items()}, sync_dist=False)
        self._report(trainer, stage)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and self.metrics:
            self._finish(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.metrics:
            self._finish(trainer, pl_module)

    def _report(self, trainer: Trainer, stage: str) -> None:
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        self._write(trainer, stage, log_dir)

    @rank_zero_only
    def _write(self, trainer: Trainer, stage: str, log_dir: str | None) -> None:
        record = self.record
        float_stats, quant_stats = record["float"], record["quantized"]
        ratios = {f"{key}_ratio": quant_stats[key] / float_stats[key] for key in float_stats}
        record["ratios_quantized_over_float"] = ratios
        lines = [f"Quantize[{self.scheme}] {stage}: " + ", ".join(
            f"{key} {float_stats[key]:.1f} -> {quant_stats[key]:.1f}" for key in float_stats)]
        rank_zero_info("\n" + self._table + "\n" + "\n".join(lines))
        for logger in trainer.loggers:
            logger.log_metrics({f"quant/{key}": value for key, value in {**ratios, **quant_stats}.items()},
                               step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                columns = list(record["groups"][0])
                logger.log_table(key=f"quant/{self.scheme}/{stage}_groups", columns=columns,
                                 data=[[entry[c] for c in columns] for entry in record["groups"]])
        if log_dir is not None:
            write_new_json(log_dir, f"quantization_{self.scheme}_{stage}", record)
