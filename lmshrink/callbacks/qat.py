"""``QuantizationAwareTraining``: train with torchao fake quantization, evaluate the real int model.

    python train.py fit --config configs/teacher/stereoset_minilm.yaml \\
        --trainer.callbacks+=lmshrink.callbacks.QuantizationAwareTraining --trainer.default_root_dir runs/qat

The module's ``model`` is prepared in ``setup`` (before the optimizer is built and before a checkpoint is
restored: the state-dict keys do not change, so ``--ckpt_path last`` resumes a QAT run). Validation during
``fit`` runs the fake-quantized model; ``validate``/``test`` (including the test that ends ``fit``) first load
their checkpoint into the fake-quantized model, then convert it to real integer weights and evaluate that.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from lmshrink.quantize.fake_quant import convert_qat, is_prepared, prepare_qat, qat_base_config
from lmshrink.quantize.apply import HEADS


class QuantizationAwareTraining(Callback):
    """Quantization-aware training with torchao fake quantization; evaluation converts to real integer weights."""

    def __init__(self, weight_bits: int = 4, group_size: int = 32, skip_modules: list[str] | None = None) -> None:
        """
        Args:
            weight_bits: Integer width of the weights, 4 or 8 (activations: dynamic int8 per token).
            group_size: Weights share one scale per group of this many input features.
            skip_modules: Linear layers trained and kept in float; default ``[classifier]``.
        """
        qat_base_config(weight_bits, group_size)  # refuses unsupported widths at config time
        self.weight_bits = weight_bits
        self.group_size = group_size
        self.skip_modules = [HEADS[1]] if skip_modules is None else list(skip_modules)  # the classifier head
        self.converted = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.converted or is_prepared(pl_module.model):
            return
        names = prepare_qat(pl_module.model, self.weight_bits, self.group_size, self.skip_modules)
        rank_zero_info(f"QAT: fake-quantizing {len(names)} Linear layers (int8 activations x int{self.weight_bits} "
                       f"weights, groups of {self.group_size})")

    def _convert(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.converted:
            convert_qat(pl_module.model, self.weight_bits, self.group_size)
            self.converted = True
            rank_zero_info("QAT: converted to integer weights for evaluation")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._convert(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._convert(trainer, pl_module)
