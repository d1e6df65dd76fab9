"""What a run prints: progress as plain lines when nobody watches a terminal, and a model summary without noise.

On a cluster (SLURM, nohup, CI) stdout goes to a file, where a tqdm bar is drawn only when the epoch ends: a
user reading the log sees nothing for the whole epoch. :class:`LineProgress` prints one line every
``every_n_steps`` steps or ``every_seconds`` seconds instead (step/total, loss, samples/s, ETA). The CLI uses
it in place of the bar whenever stdout is not a terminal.
"""

from __future__ import annotations

import time

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class LineProgress(ProgressBar):
    """Progress as one plain line every N steps or seconds, for logs redirected to a file."""

    def __init__(self, every_n_steps: int = 50, every_seconds: float = 60.0) -> None:
        """
        Args:
            every_n_steps: Print after every this many training batches.
            every_seconds: Also print when this many seconds passed since the last line.
        """
        super().__init__()
        if every_n_steps < 1 or every_seconds <= 0:
            raise ValueError(f"LineProgress: every_n_steps={every_n_steps} must be >= 1 and every_seconds="
                             f"{every_seconds} > 0")
        self.every_n_steps = every_n_steps
        self.every_seconds = every_seconds
        self._enabled = True
        self._start = self._last = 0.0
        self._samples = 0
        self._first_batch = 0
        self._eval_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, trainer: Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, flush=True)

    def _epoch_begin(self, trainer: Trainer) -> None:
        self._start = self._last = time.perf_counter()
        self._samples = 0
        self._first_batch = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # > 0 after a resume

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_begin(trainer)  # a mid-epoch resume starts here, without on_train_epoch_start

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_begin(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        labels = batch.get("labels") if isinstance(batch, dict) else None
        self._samples += (len(labels) if labels is not None else 0) * trainer.world_size
        now, done, total = time.perf_counter(), batch_idx + 1, self.total_train_batches
        if done % self.every_n_steps and now - self._last < self.every_seconds and done != total:
            return
        self._last = now
        elapsed = now - self._start
        rate = (done - self._first_batch) / elapsed if elapsed > 0 else 0.0
        parts = [f"[train] epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"batch {done}/{total}" if isinstance(total, int) else f"batch {done}",
                 f"step {trainer.global_step}"]
        loss = self.get_metrics(trainer, pl_module).get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{self._samples / elapsed:.1f} samples/s" if elapsed > 0 else "")
        if isinstance(total, int) and rate > 0:
            parts.append(f"ETA {_duration((total - done) / rate)}")
        self._print(trainer, "  ".join(part for part in parts if part))

    def _eval_begin(self) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_begin()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_begin()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._print(trainer, f"[val] step {trainer.global_step}: evaluated in "
                                 f"{_duration(time.perf_counter() - self._eval_start)}")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer, f"[test] evaluated in {_duration(time.perf_counter() - self._eval_start)}")


class ParameterSummary(ModelSummary):
    """Lightning's model summary without its FLOPs column and ``Total Flops`` line, which read 0 for models run on
    dict batches (Lightning counts FLOPs only through ``example_input_array``)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *columns)
        lines = [line for line in table.splitlines() if not line.rstrip().endswith("Total Flops")]
        rank_zero_info("\n".join(lines))
