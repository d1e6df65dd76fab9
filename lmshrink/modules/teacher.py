"""``TeacherFineTune``: fine-tune a local Hugging Face encoder for sequence classification, or for token
classification (named-entity recognition: ``task: token``).

Run it with ``python train.py fit --config configs/teacher/stereoset_minilm.yaml`` (or ``conll_minilm.yaml``).
Per-group metrics are not computed here: the :class:`~lmshrink.callbacks.GroupMetrics` callback reads the ``preds``
every validation/test step returns, so any module that follows this contract is measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch.nn.functional as F

from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lmshrink.backbones import accepted_inputs, has_classifier_head, load_sequence_classifier, select_inputs
from lmshrink.dropout import fast_dropout
from lmshrink.export import label_names, save_pretrained
from lmshrink.metrics.groups import IGNORE_INDEX
from lmshrink.modules.base import TrainingModule
from lmshrink.modules.model_cards import datamodule_option, start_model_card
from lmshrink.optim import OptimizerFactory, SchedulerFactory, check_optimizer_options

EVAL_STAGES = ("val", "test")


class TeacherFineTune(TrainingModule):
    """Fine-tune a local or hub Hugging Face encoder for sequence or token classification, measured per group."""

    def __init__(
        self,
        model_path: str = "minilm",
        num_labels: int = 3,
        task: Literal["sequence", "token"] = "sequence",
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        freeze_word_embeddings: bool = False,
        export_dir: str | None = None,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
    ) -> None:
        """
        Args:
            model_path: Local Hugging Face model directory, or an offline default (``minilm``).
            num_labels: Number of classes (linked from the datamodule's ``num_labels``).
            task: ``sequence`` (one label per example, ``GroupedTextDataModule``) or ``token`` (one tag per word,
                ``TokenTaggingDataModule``; cross-entropy over each word's first sub-token).
            learning_rate: Peak AdamW learning rate, reached after warmup.
            weight_decay: AdamW weight decay (not applied to biases and norm weights).
            warmup_ratio: Share of all training steps spent warming the learning rate up linearly.
            freeze_word_embeddings: Keep the token-embedding matrix fixed. On MiniLM it holds half of the
                parameters but gets a dense gradient from a few rows per batch; freezing it cuts the step time
                on CPU by about a quarter and the checkpoint by a third.
            export_dir: At the end of fit, write the fine-tuned model (final weights) there as a plain HF
                directory, e.g. to serve as ``--model.teacher_path`` of a distillation (must be new or empty);
                default: ``model`` in the run directory.
            optimizer: Replaces the default AdamW (``learning_rate``, ``weight_decay``): a torch optimizer class and
                its init_args, called with the parameter groups (see :mod:`lmshrink.optim`).
            lr_scheduler: Replaces the default linear warmup/decay (``warmup_ratio``); stepped every batch, given
                ``total_steps`` when it takes it.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.exported_dir: Path | None = None
        """The directory this run's fit wrote the model to (its card takes the run's measurements)."""
        check_optimizer_options(learning_rate, weight_decay, warmup_ratio, optimizer, lr_scheduler,
                                owner=TeacherFineTune)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.task = task
        self.untrained_head = not has_classifier_head(model_path, num_labels, task=task)
        if self.untrained_head:
            rank_zero_info(f"[lmshrink] model_path={model_path!r} has no classifier head for {num_labels} labels: "
                           f"a new one is initialised (fine-tuning trains it)")
        self.model = load_sequence_classifier(model_path, num_labels, task=task, new_head=True)
        # from_pretrained returns eval mode and Lightning keeps submodule modes as found: enable dropout.
        self.model.train()
        self.model_inputs = accepted_inputs(self.model)
        if freeze_word_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        self.train_acc = MulticlassAccuracy(num_classes=num_labels, average="micro", ignore_index=IGNORE_INDEX)
        # Summed loss and count per stage, reduced across ranks before dividing: exact under DDP.
        self.eval_loss = nn.ModuleDict({stage: MeanMetric() for stage in EVAL_STAGES})

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(**select_inputs(batch, self.model_inputs)).logits

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        logits = self(batch)
        labels = batch["labels"]
        # token classification: every labelled sub-token (a word's first) is one example of the loss
        flat_logits, flat_labels = logits.flatten(0, -2), labels.flatten()
        per_example = F.cross_entropy(flat_logits.float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="none")
        valid = flat_labels != IGNORE_INDEX
        preds = logits.argmax(dim=-1)
        loss = per_example[valid].mean()
        if stage == "train":
            self.train_acc(flat_logits.argmax(dim=-1), flat_labels)
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/acc", self.train_acc, on_step=True, on_epoch=False)
        else:
            self.eval_loss[stage].update(per_example[valid])
            self.log(f"{stage}/loss", self.eval_loss[stage], on_step=False, on_epoch=True, prog_bar=True)
        return {"loss": loss, "preds": preds.detach(), "logits": logits.detach()}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        with fast_dropout():  # CPU dropout masks 4 to a random number (lmshrink.dropout)
            return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "test")

    @property
    def source_model(self) -> str:
        return str(self.hparams.model_path)

    def output_dirs(self, run_dir: str | Path, subcommand: str) -> dict[str, Path]:
        if subcommand != "fit":
            return {}
        return {"export_dir": Path(self.hparams.export_dir or Path(run_dir) / "model")}

    @rank_zero_only
    def on_fit_end(self) -> None:
        if self.trainer.fast_dev_run:  # a debug run (configs/debug/fast_dev_run.yaml) leaves no model behind
            return
        directory = self.output_dirs(self.trainer.default_root_dir, "fit")["export_dir"]
        save_pretrained(self.model, self.hparams.model_path, directory, label_names(self.trainer.datamodule))
        hp, trainer = self.hparams, self.trainer
        settings = {key: hp[key] for key in ("learning_rate", "weight_decay", "warmup_ratio", "freeze_word_embeddings")}
        settings |= {"steps": trainer.global_step, "epochs": trainer.current_epoch,
                     "batch_size": datamodule_option(trainer, "batch_size")}
        start_model_card(trainer, self, directory, {"parent": str(hp.model_path), "method": "Fine-tuning",
                                                   "family": "fine-tuning", "settings": settings}, self.model)
        self.exported_dir = directory
        rank_zero_info(f"[lmshrink] fine-tuned model written to {directory}")

    def card_dirs(self) -> list[str | Path]:
        return [self.exported_dir, self.hparams.model_path]
