"""``ResumableModelCheckpoint``: top-k checkpoints that stay top-k across a kill and a resume.

Lightning's ``ModelCheckpoint`` forgets a best checkpoint that was written after the checkpoint a run resumes
from (the periodic ``last.ckpt`` of step N is saved before the validation of step N writes ``best-step=N``):
the resumed run never deletes it, and ``save_top_k: 1`` ends with two best files. After the restore, this
callback adopts such files (with the score each recorded for itself), removes those from steps after the
resume point (the resumed run redoes those steps and writes them again), and trims back to ``save_top_k``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class ResumableModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose top-k bookkeeping survives a kill and resume (see the module docstring)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.global_step == 0 or self.monitor is None or self.save_top_k in (0, -1) or not self.dirpath:
            return
        known = {str(Path(path)) for path in self.best_k_models}
        for path in sorted(Path(self.dirpath).glob("*.ckpt")):
            if str(path) in known or path.name.startswith(self.CHECKPOINT_NAME_LAST):
                continue
            state = torch.load(path, map_location="cpu", weights_only=False)
            own = state.get("callbacks", {}).get(self.state_key)
            if own is None or own.get("current_score") is None:
                continue  # written by another callback
            if state["global_step"] > trainer.global_step:
                self._remove_checkpoint(trainer, str(path))  # from the abandoned steps after the resume point
            else:
                self.best_k_models[str(path)] = own["current_score"]
        self._trim_to_top_k(trainer)

    def _trim_to_top_k(self, trainer: Trainer) -> None:
        worst, best = (max, min) if self.mode == "min" else (min, max)
        while len(self.best_k_models) > self.save_top_k:
            path = worst(self.best_k_models, key=self.best_k_models.get)
            self.best_k_models.pop(path)
            self._remove_checkpoint(trainer, path)
        if self.best_k_models:
            if len(self.best_k_models) == self.save_top_k:
                self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.get)
                self.kth_value = self.best_k_models[self.kth_best_model_path]
            self.best_model_path = best(self.best_k_models, key=self.best_k_models.get)
            self.best_model_score = self.best_k_models[self.best_model_path]
