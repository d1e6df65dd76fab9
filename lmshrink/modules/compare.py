"""``Compare``: a candidate model against a reference model on the same examples, per group (``validate``/``test``).

    python train.py test --config configs/teacher/stereoset_minilm.yaml --model lmshrink.modules.Compare \\
        --model.model_path runs/prune/pruned_model --model.reference_path runs/teacher_stereoset_minilm/model

Nothing trains. Every evaluation batch goes through both networks; the candidate's and the reference's
logits go to :class:`~lmshrink.callbacks.GroupMetrics`, which reports per group the accuracy, the delta to the
reference with its paired (Tango) interval, flips, the exact McNemar p-value with Holm's correction, and
calibration. This is what ``python -m lmshrink.gate`` runs, and what a user runs to compare any two fine-tuned
classifiers (a HF directory, a pruned directory or a ``TeacherFineTune`` checkpoint) that share a tokenizer.
The Quantize callback works on it too (it quantizes the candidate).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lmshrink.backbones import accepted_inputs, load_finetuned, load_tokenizer, model_task, select_inputs
from lmshrink.cards.digest import weights_digest
from lmshrink.distill.cache import BatchLogitsCache, cache_fingerprint
from lmshrink.distill.students import check_same_tokenizer
from lmshrink.errors import OptionError
from lmshrink.modules.base import LmshrinkModule
from lmshrink.paths import refuse_a_file


class Compare(LmshrinkModule):
    """Evaluate a candidate classifier against a reference classifier on the same examples, per group."""

    def __init__(self, model_path: str, reference_path: str, num_labels: int = 3,
                 reference_name: str = "reference", reference_cache_dir: str | None = None) -> None:
        """
        Args:
            model_path: The candidate (e.g. a compressed model): a HF directory, hub id or TeacherFineTune ``.ckpt``.
            reference_path: The model it is compared with (e.g. the fine-tuned teacher), in the same forms.
            num_labels: Number of classes (linked from the datamodule).
            reference_name: What the reference is called in metric names and tables (``<stage>/delta/<group>``,
                ``<stage>/<name>_avg_acc``, ``delta_to_<name>``).
            reference_cache_dir: Keep the reference's logits there, per evaluation batch, and reuse them: a study
                compares every model of a seed with that seed's teacher on the same batches, and ran the teacher
                again for each (about half of a float model's test loop). Served only for the same weights
                (their digest), architecture, batch and precision (:class:`~lmshrink.distill.cache.BatchLogitsCache`),
                so the numbers are those of running it.
        """
        super().__init__()
        self.save_hyperparameters()
        refuse_a_file(reference_cache_dir, "--model.reference_cache_dir")
        if not reference_name.isidentifier():
            raise OptionError(f"--model.reference_name={reference_name!r} must be a plain name (letters, digits, _)")
        self.reference_name = reference_name
        self.model, tokenizer = load_finetuned(model_path, num_labels, option="model_path")
        reference, reference_tokenizer = load_finetuned(reference_path, num_labels, option="reference_path")
        self.task = model_task(self.model)  # taggers (NER) are compared by entity F1
        if model_task(reference) != self.task:
            raise OptionError(f"--model.model_path is a {self.task} classifier but --model.reference_path is a "
                              f"{model_task(reference)} classifier; compare models of one task")
        check_same_tokenizer(load_tokenizer(reference_tokenizer), load_tokenizer(tokenizer), reference_path, model_path,
                             ("reference", "candidate"), "both models read the same batches")
        self.model.eval().requires_grad_(False)
        # Kept outside the module registry (as the distillation teacher): not in the checkpoint, not moved by
        # Quantize, which quantizes ``model`` only.
        self.__dict__["_reference"] = reference.eval().requires_grad_(False)
        self.model_inputs = accepted_inputs(self.model)
        self.reference_inputs = accepted_inputs(reference)

    @property
    def reference(self) -> nn.Module:
        return self.__dict__["_reference"]

    def given_models(self) -> dict[str, tuple[str, nn.Module]]:
        return {"model_path": (str(self.hparams.model_path), self.model),
                "reference_path": (str(self.hparams.reference_path), self.reference)}

    @property
    def source_model(self) -> str:
        return str(self.hparams.model_path)

    def card_dirs(self) -> list[str | Path]:
        return [self.hparams.model_path]

    def _sync_reference(self) -> None:
        self.reference.to(self.device)
        fingerprint = self._reference_fingerprint() if self.hparams.reference_cache_dir else None
        self._reference_cache = (BatchLogitsCache(self.hparams.reference_cache_dir, fingerprint, self.global_rank)
                                 if fingerprint is not None else None)

    def _reference_fingerprint(self) -> str | None:
        """What the reference's logits depend on besides the batch: its weights and architecture, the kernels
        (library versions, device, threads); None (nothing cached) for weights without a digest."""
        import transformers

        reference = self.reference
        digest = weights_digest(reference)
        if digest is None:
            return None
        return cache_fingerprint(digest, type(reference).__name__, reference.config.to_json_string(),
                                 getattr(reference.config, "_attn_implementation", None), torch.__version__,
                                 transformers.__version__, self.device.type, torch.get_num_threads())

    def _save_reference_cache(self) -> None:
        if getattr(self, "_reference_cache", None) is not None:
            self._reference_cache.save()

    def on_validation_start(self) -> None:
        self._sync_reference()

    def on_test_start(self) -> None:
        self._sync_reference()

    def on_validation_end(self) -> None:
        self._save_reference_cache()

    def on_test_end(self) -> None:
        self._save_reference_cache()

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.model(**select_inputs(batch, self.model_inputs)).logits

    def _eval_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self(batch)
        inputs = select_inputs(batch, self.reference_inputs)
        cache = getattr(self, "_reference_cache", None)
        reference_logits = (cache.logits(inputs, lambda: self.reference(**inputs).logits) if cache is not None
                            else self.reference(**inputs).logits)
        return {"preds": logits.argmax(-1), "logits": logits, "reference_preds": reference_logits.argmax(-1),
                "reference_logits": reference_logits}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch)
