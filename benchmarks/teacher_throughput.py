"""Training throughput of lmshrink's Lightning teacher step vs a plain PyTorch loop, side by side.

Both use the same MiniLM model, the same StereoSet batches (the datamodule's own loader, so collation
is paid by both), the same AdamW + warmup schedule and 2 CPU threads. The Lightning side runs the
shipped configuration: TeacherFineTune with per-step loss/accuracy logging, the GroupMetrics callback,
a progress bar, and the offline W&B logger. Runs alternate (plain, Lightning, plain, Lightning, ...) and
the median of each is reported, which keeps drift of a shared machine out of the ratio.

``--precision`` runs both loops at each Lightning precision given (default ``32-true bf16-mixed``: bf16 autocast,
which the plain loop runs through ``torch.autocast``), all in the same alternating rounds, and prints the
throughput of each precision relative to the first.

Both loops draw their dropout masks as the teacher's training step does (:mod:`lmshrink.dropout`);
``--dropout-masks`` also times the plain loop with PyTorch's own masks (``bernoulli_``) in the same rounds and
prints the step time of lmshrink's masks relative to them.

    python benchmarks/teacher_throughput.py [--steps 40] [--warmup 5] [--repeats 3] [--precision 32-true bf16-mixed]
        [--dropout-masks]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import contextlib
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
from lmshrink.dropout import fast_dropout
from lmshrink.modules import TeacherFineTune
from lmshrink.optim import configure_optimization
from lmshrink.machine import cpu_line
from lmshrink.errors import at_least_one, run_command

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


def plain_loop(dm: GroupedTextDataModule, steps: int, warmup: int, precision: str = "32-true",
               torch_masks: bool = False) -> float:
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
        masks = contextlib.nullcontext() if torch_masks else fast_dropout()
        with masks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).logits
            loss = F.cross_entropy(logits, batch["labels"])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH_SIZE / (time.perf_counter() - start)


def lightning_loop(dm: GroupedTextDataModule, steps: int, warmup: int, precision: str = "32-true") -> float:
    torch.manual_seed(0)
    module = TeacherFineTune(freeze_word_embeddings=True, learning_rate=1e-4)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as root:
        logger = pl.loggers.WandbLogger(project="lmshrink-bench", save_dir=root, offline=True)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=steps + warmup, limit_val_batches=0, logger=logger,
            callbacks=[GroupMetrics(write_json=False), timer], enable_checkpointing=False, log_every_n_steps=10,
            default_root_dir=root, enable_model_summary=False, precision=precision,
        )
        trainer.fit(module, datamodule=dm)
        logger.experiment.finish()
    return steps * BATCH_SIZE / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=at_least_one, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=at_least_one, default=3)
    parser.add_argument("--precision", nargs="+", choices=["32-true", "bf16-mixed"], default=["32-true", "bf16-mixed"],
                        help="Lightning precisions timed side by side (the first is the reference of the ratios)")
    parser.add_argument("--dropout-masks", action="store_true",
                        help="also time the plain loop with PyTorch's own dropout masks (bernoulli_)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    dm = datamodule()
    plain_loop(dm, steps=5, warmup=2)  # unmeasured: first-touch allocations and kernel selection
    plain = {precision: [] for precision in args.precision}
    lightning = {precision: [] for precision in args.precision}
    torch_masks = {precision: [] for precision in args.precision}
    for _ in range(args.repeats):
        for precision in args.precision:
            plain[precision].append(plain_loop(dm, args.steps, args.warmup, precision))
            lightning[precision].append(lightning_loop(dm, args.steps, args.warmup, precision))
            if args.dropout_masks:
                torch_masks[precision].append(plain_loop(dm, args.steps, args.warmup, precision, torch_masks=True))
    print(f"CPU: {cpu_line()}")
    print(f"model: all-MiniLM-L6-v2 (frozen word embeddings), batch {BATCH_SIZE}, {args.steps} timed steps, "
          f"{torch.get_num_threads()} threads, {args.repeats} alternating repeats")
    reference = statistics.median(lightning[args.precision[0]])
    for precision in args.precision:
        plain_median, lightning_median = statistics.median(plain[precision]), statistics.median(lightning[precision])
        print(f"[{precision}] plain PyTorch loop : {plain_median:7.2f} samples/s  "
              f"(runs: {', '.join(f'{x:.2f}' for x in plain[precision])})")
        print(f"[{precision}] lmshrink Lightning : {lightning_median:7.2f} samples/s  "
              f"(runs: {', '.join(f'{x:.2f}' for x in lightning[precision])})")
        print(f"[{precision}] Lightning/plain ratio: {lightning_median / plain_median:.3f}  -> overhead "
              f"{(1 - lightning_median / plain_median) * 100:+.1f} % (target < 5 %)")
        if precision != args.precision[0]:
            print(f"[{precision}] Lightning step time vs {args.precision[0]}: {reference / lightning_median:.2f}x")
        if args.dropout_masks:
            torch_median = statistics.median(torch_masks[precision])
            print(f"[{precision}] plain loop, PyTorch's masks: {torch_median:7.2f} samples/s  (runs: "
                  f"{', '.join(f'{x:.2f}' for x in torch_masks[precision])}); step time with lmshrink's masks: "
                  f"{torch_median / plain_median:.2f}x")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
