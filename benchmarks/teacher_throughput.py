"""Training throughput of lmshrink's Lightning teacher step vs a plain PyTorch loop, side by side.

Both use the same MiniLM model, the same StereoSet batches (the datamodule's own loader, so collation
is paid by both), the same AdamW + warmup schedule and 2 CPU threads. The Lightning side runs the
shipped configuration: TeacherFineTune with per-step loss/accuracy logging, the GroupMetrics callback,
a progress bar, and the offline W&B logger. Runs alternate (plain, Lightning, plain, Lightning, ...) and
the median of each is reported, which keeps drift of a shared machine out of the ratio.

    python benchmarks/teacher_throughput.py [--steps 40] [--warmup 5] [--repeats 2]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from lmshrink.callbacks import GroupMetrics
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.modules import TeacherFineTune
from lmshrink.optim import configure_optimization
from lmshrink.machine import cpu_line

BATCH_SIZE = 32


class StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def datamodule() -> GroupedTextDataModule:
    dm = GroupedTextDataModule(batch_size=BATCH_SIZE, max_length=96)
    dm.setup("fit")
    return dm


def plain_loop(dm: GroupedTextDataModule, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    module = TeacherFineTune(freeze_word_embeddings=True)
    model = module.model.train()
    configured = configure_optimization(model, steps + warmup, learning_rate=1e-4, weight_decay=0.01, warmup_ratio=0.1)
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    loader = dm.train_dataloader()
    loader.trained_batches = None
    start = None
    for index, batch in enumerate(loader):
        if index == warmup:
            start = time.perf_counter()
        if index == steps + warmup:
            break
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"]).logits
        loss = F.cross_entropy(logits, batch["labels"])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH_SIZE / (time.perf_counter() - start)


def lightning_loop(dm: GroupedTextDataModule, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    module = TeacherFineTune(freeze_word_embeddings=True, learning_rate=1e-4)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as root:
        logger = pl.loggers.WandbLogger(project="lmshrink-bench", save_dir=root, offline=True)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=steps + warmup, limit_val_batches=0, logger=logger,
            callbacks=[GroupMetrics(write_json=False), timer], enable_checkpointing=False, log_every_n_steps=10,
            default_root_dir=root, enable_model_summary=False,
        )
        trainer.fit(module, datamodule=dm)
        logger.experiment.finish()
    return steps * BATCH_SIZE / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    dm = datamodule()
    plain_loop(dm, steps=5, warmup=2)  # unmeasured: first-touch allocations and kernel selection
    plain, lightning = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(dm, args.steps, args.warmup))
        lightning.append(lightning_loop(dm, args.steps, args.warmup))
    plain_median, lightning_median = statistics.median(plain), statistics.median(lightning)
    overhead = 1 - lightning_median / plain_median
    print(f"CPU: {cpu_line()}")
    print(f"model: all-MiniLM-L6-v2 (frozen word embeddings), batch {BATCH_SIZE}, {args.steps} timed steps, "
          f"{torch.get_num_threads()} threads, {args.repeats} alternating repeats")
    print(f"plain PyTorch loop : {plain_median:7.2f} samples/s  (runs: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"lmshrink Lightning : {lightning_median:7.2f} samples/s  (runs: {', '.join(f'{x:.2f}' for x in lightning)})")
    print(f"Lightning/plain ratio: {lightning_median / plain_median:.3f}  -> overhead {overhead * 100:+.1f} % (target < 5 %)")


if __name__ == "__main__":
    main()
