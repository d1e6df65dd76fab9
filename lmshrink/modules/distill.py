"""``Distillation``: train a smaller student from a frozen teacher, measured per group against the teacher.

    python train.py fit --config configs/distill/stereoset_minilm_to_3layer.yaml \\
        --model.teacher_path runs/teacher_stereoset_minilm/checkpoints/best-step=316.ckpt

The teacher (a local HF directory or a ``TeacherFineTune`` checkpoint) is frozen, in eval mode, run under
``no_grad``, kept out of the optimizer and out of the checkpoint (it is saved by path), and moved to the
student's device and dtype. Under DDP every rank runs it on its own shard. Validation returns the
teacher's predictions too, so :class:`~lmshrink.callbacks.GroupMetrics` logs the per-group delta of the
student to its teacher at every validation. At the end of ``fit`` the student is written as a plain HF
directory (``student_save_dir``) that ``from_pretrained`` loads.

The loss itself is :class:`~lmshrink.distill.objective.DistillationObjective` (plain torch: terms, weights,
layer map, projections); this module only runs the two networks and wires the objective into training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lmshrink.backbones import (
    accepted_inputs,
    has_classifier_head,
    load_causal_lm,
    load_finetuned,
    load_sequence_classifier,
    load_tokenizer,
    model_task,
    select_inputs,
)
from lmshrink.distill import losses, students
from lmshrink.distill.cache import cache_fingerprint, compute_topk_logits, load_or_build
from lmshrink.distill.objective import DistillationObjective
from lmshrink.distill.options import LossWeights, StudentSource
from lmshrink.distill.students import (
    check_same_tokenizer,
    evenly_spaced_layers,
    num_layers,
    student_from_config,
    student_from_teacher_layers,
)
from lmshrink.dropout import fast_dropout
from lmshrink.errors import OptionError
from lmshrink.export import label_names, save_pretrained
from lmshrink.distill.next_token import next_token_nll
from lmshrink.metrics.groups import IGNORE_INDEX
from lmshrink.modules.base import TrainingModule
from lmshrink.modules.model_cards import plain_settings, start_model_card
from lmshrink.optim import OptimizerFactory, SchedulerFactory, check_optimizer_options
from lmshrink.options import as_settings
from lmshrink.paths import refuse_a_file


class Distillation(TrainingModule):
    """Distil a smaller student from a frozen teacher (classifier or causal LM), measured per group against it."""

    reference_name = "teacher"
    """GroupMetrics logs per-group deltas of the student to this reference (see its docstring)."""

    def __init__(
        self,
        teacher_path: str,
        num_labels: int = 3,
        student: StudentSource = StudentSource(),
        loss_weights: LossWeights = LossWeights(),
        temperature: float = 2.0,
        layer_map: Literal["uniform", "last"] | list[int] = "uniform",
        learning_rate: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        student_save_dir: str | None = None,
        teacher_cache_dir: str | None = None,
        teacher_topk: int = 0,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
    ) -> None:
        """
        Args:
            teacher_path: Fine-tuned teacher: a local HF directory or a TeacherFineTune ``.ckpt``.
            num_labels: Number of classes (linked from the datamodule).
            student: Where the student comes from, exactly one of ``num_layers`` (evenly spaced teacher blocks,
                copied), ``layers`` (these teacher blocks), ``config`` (the teacher's architecture with these fields,
                random) or ``path`` (a local HF model sharing the teacher's tokenizer): ``--model.student.num_layers 3``.
            loss_weights: Weight of each loss term: ``kd`` (soft-target KL), ``ce`` (gold labels), ``hidden``
                (hidden-state MSE, TinyBERT), ``cosine`` (DistilBERT), ``attention`` (attention-map KL, MiniLM),
                ``embedding`` (embedding MSE); 0 turns a term off: ``--model.loss_weights.hidden 1.0``.
            temperature: Softmax temperature of the soft-target loss.
            layer_map: Teacher block each student block imitates (hidden and attention terms): ``uniform`` (every
                k-th, ending with the last), ``last`` or an explicit list of teacher blocks (0-based, as
                ``--model.student.layers``).
            learning_rate: Peak AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_ratio: Share of steps with linear warmup.
            student_save_dir: Where the student is saved as a HF directory at the end of fit (must be new or empty);
                default: ``student`` in the run directory.
            teacher_cache_dir: Cache the teacher's logits for the training split there (computed once, reused by
                every epoch and later runs); only with logit losses (kd, ce).
            teacher_topk: Logits kept per example in the cache; 0 keeps all classes (exact).
            optimizer: Replaces the default AdamW (``learning_rate``, ``weight_decay``); see :mod:`lmshrink.optim`.
            lr_scheduler: Replaces the default linear warmup/decay (``warmup_ratio``).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.exported_dir: Path | None = None
        """The directory this run's fit wrote the student to (its card takes the run's measurements)."""
        student, loss_weights = as_settings(student, StudentSource), as_settings(loss_weights, LossWeights)
        student.check()
        refuse_a_file(teacher_cache_dir, "--model.teacher_cache_dir")
        if teacher_cache_dir and loss_weights.feature_terms:
            raise OptionError(f"teacher_cache_dir caches logits only; --model.loss_weights "
                              f"{loss_weights.feature_terms} need the teacher's hidden states every step: set them "
                              f"to 0 or drop the cache")
        if not temperature > 0:
            raise OptionError(f"--model.temperature={temperature} must be > 0")
        if teacher_topk < 0:
            raise OptionError(f"--model.teacher_topk={teacher_topk} must be >= 0 (0 keeps all classes)")
        check_optimizer_options(learning_rate, weight_decay, warmup_ratio, optimizer, lr_scheduler,
                                owner=Distillation)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.teacher_cache: dict[str, Tensor] | None = None
        teacher, self.tokenizer_path = load_finetuned(teacher_path, num_labels, allow_causal_lm=True)
        # A generative teacher is distilled token by token over its vocabulary; GroupMetrics (class accuracy)
        # does not apply: evaluation reports token-level KD loss and perplexity instead.
        self.is_causal_lm = teacher.can_generate()
        self.task = model_task(teacher)  # a token classifier (NER) is distilled tag by tag
        if teacher_cache_dir and (self.is_causal_lm or self.task == "token"):
            logits = ("per-token vocabulary logits of a causal LM" if self.is_causal_lm else
                      "per-word tag logits of a token classifier")
            raise OptionError(f"teacher_cache_dir caches per-example class logits; caching the {logits} teacher is "
                              f"not supported")
        if self.is_causal_lm:
            self.reference_name = None
        if student.path is not None:
            option = "--model.student.path"
            if not self.is_causal_lm and not has_classifier_head(student.path, num_labels, option, self.task):
                rank_zero_info(f"[lmshrink] {option}={student.path!r} has no {self.task} classifier head for "
                               f"{num_labels} labels: a new one is initialised (distillation trains it)")
            check_same_tokenizer(load_tokenizer(self.tokenizer_path), load_tokenizer(student.path),
                                 str(teacher_path), student.path)
            self.model = (load_causal_lm(student.path, option) if self.is_causal_lm else
                          load_sequence_classifier(student.path, num_labels, option, self.task,
                                                   new_head=True)).train()
        elif student.config is not None:
            self.model = student_from_config(teacher, **student.config)
        else:
            keep = student.layers or evenly_spaced_layers(num_layers(teacher), student.num_layers)
            self.model = student_from_teacher_layers(teacher, keep)
        if loss_weights.attention > 0:
            for network in (teacher, self.model):
                network.set_attn_implementation("eager")  # only eager attention returns the attention maps
        self._set_teacher(teacher)
        self.model_inputs = accepted_inputs(self.model)
        self.objective = DistillationObjective(
            loss_weights.as_dict(), temperature, students.layer_map(num_layers(self.model), num_layers(teacher), layer_map),
            self.model.config.hidden_size, teacher.config.hidden_size, causal_lm=self.is_causal_lm)
        self.eval_loss = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        if self.is_causal_lm:  # per-token means, summed over ranks before dividing
            self.eval_kd = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
            self.eval_teacher_nll = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})

    # The teacher is stored outside nn.Module's registry (plain __dict__ entry, which nn.Module.__setattr__
    # would not allow): no parameters in the optimizer, no keys in the checkpoint, and DDP does not wrap it.
    @property
    def teacher(self) -> nn.Module:
        return self.__dict__["_teacher"]

    def _set_teacher(self, model: nn.Module) -> None:
        self.__dict__["_teacher"] = model.eval().requires_grad_(False)

    def _sync_teacher(self) -> None:
        parameter = next(self.model.parameters())
        self.teacher.to(device=parameter.device, dtype=parameter.dtype).eval()

    def on_fit_start(self) -> None:
        self._sync_teacher()
        if self.hparams.teacher_cache_dir:
            self._load_teacher_cache()

    def _teacher_logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.teacher(**{k: v.to(self.device) for k, v in select_inputs(batch, self.model_inputs).items()}).logits

    def _load_teacher_cache(self) -> None:
        """Rank 0 computes (or finds) the cache for the whole training split; every rank then loads it."""
        datamodule = self.trainer.datamodule
        size = datamodule.split_size("train")
        k = self.hparams.teacher_topk or self.hparams.num_labels
        fingerprint = cache_fingerprint(str(self.hparams.teacher_path), size, k, datamodule.split_fingerprint("train"))
        path = Path(self.hparams.teacher_cache_dir) / f"teacher_top{k}_{fingerprint}.pt"
        if self.trainer.is_global_zero:
            loader = datamodule.ordered_loader("train", batch_size=128)
            load_or_build(path, lambda: compute_topk_logits(self._teacher_logits, loader, size, k))
        self.trainer.strategy.barrier()
        self.teacher_cache = {key: value.to(self.device) for key, value in torch.load(path, weights_only=True).items()}

    def on_validation_start(self) -> None:
        self._sync_teacher()

    def on_test_start(self) -> None:
        self._sync_teacher()

    # ---------------------------------------------------------------------------------------------- steps
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(**select_inputs(batch, self.model_inputs)).logits

    def _outputs(self, model: nn.Module, batch: dict[str, Tensor], features: bool):
        """One network's outputs; ``features``: with the hidden states / attention maps the objective compares."""
        return model(**select_inputs(batch, self.model_inputs),
                     output_hidden_states=features and self.objective.uses_hidden_states,
                     output_attentions=features and self.objective.uses_attentions)

    def _cached_teacher(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The teacher's cached top-k logits ``(values, indices)`` of the batch's examples, by dataset index."""
        return self.teacher_cache["values"][batch["index"]], self.teacher_cache["indices"][batch["index"]]

    def _shared_step(self, batch: dict[str, Tensor], stage: str):
        """Teacher and student on one batch. Training returns the objective's weighted loss (teacher features
        only when a term compares them; the cached logits when there is a cache); evaluation measures the
        student against the labels or next tokens and returns both predictions for GroupMetrics."""
        training = stage == "train"
        cached = self._cached_teacher(batch) if training and self.teacher_cache is not None else None
        with torch.no_grad():
            teacher_out = None if cached is not None else self._outputs(self.teacher, batch, features=training)
        student_out = self._outputs(self.model, batch, features=training)
        if training:
            loss, terms = self.objective(student_out, teacher_out, batch, cached)
            self.log_dict({f"train/{name}_loss": value.detach() for name, value in terms.items()})
            self.log("train/loss", loss, prog_bar=True)
            return loss
        if self.is_causal_lm:
            return self._causal_eval(batch, student_out.logits, teacher_out.logits, stage)
        labels = batch["labels"]
        labelled = labels != IGNORE_INDEX
        per_example = F.cross_entropy(student_out.logits.flatten(0, -2).float(), labels.flatten(),
                                      ignore_index=IGNORE_INDEX, reduction="none")  # a tagger: one row per word
        self.eval_loss[stage].update(per_example[labelled.flatten()])
        self.log(f"{stage}/loss", self.eval_loss[stage], on_step=False, on_epoch=True, prog_bar=True)
        logits, teacher_logits = student_out.logits.detach(), teacher_out.logits
        return {"preds": logits.argmax(-1), "logits": logits, "reference_preds": teacher_logits.argmax(-1),
                "reference_logits": teacher_logits}

    def _causal_eval(self, batch, logits: Tensor, teacher_logits: Tensor, stage: str) -> dict[str, Tensor]:
        """Token-level KD loss and next-token NLL of student and teacher (perplexity = exp of the mean NLL)."""
        token_mask = batch["attention_mask"].bool()
        student_nll = next_token_nll(logits, batch["input_ids"], token_mask)
        teacher_nll = next_token_nll(teacher_logits, batch["input_ids"], token_mask)
        self.eval_loss[stage].update(student_nll)
        self.eval_teacher_nll[stage].update(teacher_nll)
        kd = losses.soft_target_kl(logits, teacher_logits, self.hparams.temperature, token_mask)
        self.eval_kd[stage].update(kd, weight=token_mask.sum())
        self.log(f"{stage}/loss", self.eval_loss[stage], on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/teacher_nll", self.eval_teacher_nll[stage], on_step=False, on_epoch=True)
        self.log(f"{stage}/kd_loss", self.eval_kd[stage], on_step=False, on_epoch=True)
        return {}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        with fast_dropout():  # CPU dropout masks 4 to a random number (lmshrink.dropout)
            return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "test")

    def _log_perplexity(self, stage: str) -> None:
        if self.is_causal_lm and not self.trainer.sanity_checking:
            self.log(f"{stage}/ppl", torch.exp(self.eval_loss[stage].compute()))
            self.log(f"{stage}/teacher_ppl", torch.exp(self.eval_teacher_nll[stage].compute()))

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")

    def trainable(self) -> nn.Module:
        """The student and the objective's projections (the teacher is frozen and outside the module)."""
        return nn.ModuleDict({"student": self.model, "objective": self.objective})

    # ----------------------------------------------------------------------------------------------- save
    def given_models(self) -> dict[str, tuple[str, nn.Module]]:
        return {} if self.is_causal_lm else {"teacher_path": (str(self.hparams.teacher_path), self.teacher)}

    @property
    def source_model(self) -> str:
        return str(as_settings(self.hparams.student, StudentSource).path or f"student of {self.hparams.teacher_path}")

    def output_dirs(self, run_dir: str | Path, subcommand: str) -> dict[str, Path]:
        if subcommand != "fit":
            return {}
        return {"student_save_dir": Path(self.hparams.student_save_dir or Path(run_dir) / "student")}

    @rank_zero_only
    def on_fit_end(self) -> None:
        if self.trainer.fast_dev_run:  # a debug run (configs/debug/fast_dev_run.yaml) leaves no model behind
            return
        directory = self.output_dirs(self.trainer.default_root_dir, "fit")["student_save_dir"]
        class_names = None if self.is_causal_lm else label_names(self.trainer.datamodule)
        save_pretrained(self.model, self.tokenizer_path, directory, class_names)
        hp = self.hparams
        settings = plain_settings({key: hp[key] for key in ("student", "loss_weights", "temperature", "layer_map",
                                                            "learning_rate", "weight_decay", "warmup_ratio")})
        settings["steps"] = self.trainer.global_step
        start_model_card(self.trainer, self, directory, {"parent": str(hp.teacher_path), "method": "Distillation",
                                                        "family": "distillation", "settings": settings}, self.model,
                         parent=self.teacher)
        self.exported_dir = directory
        rank_zero_info(f"[lmshrink] student written to {directory}")

    def card_dirs(self) -> list[str | Path]:
        return [self.exported_dir]
