"""Evaluation cost of lmshrink's per-group metrics vs a plain PyTorch loop, side by side.

Both run the same MiniLM classifier and, as a reference model, a second copy of it (as a distillation teacher,
a dense model or the float model does), over the same test split in the same batches, with 2 CPU threads.
The plain loop only computes both models' logits. The Lightning side is ``train.py test`` of
:class:`~lmshrink.modules.Compare` with :class:`~lmshrink.callbacks.GroupMetrics`: per-group accuracy, ECE and
Brier, flips, KL, per-example outcomes, and at the end the final table with Wilson intervals, exact McNemar
with Holm and 1000 bootstrap resamples. Runs alternate and the median of each is reported.

    python benchmarks/eval_metrics_overhead.py [--repeats 3]
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

import lightning.pytorch as pl
import torch

from lmshrink.backbones import resolve_model_dir
from lmshrink.callbacks import GroupMetrics
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.modules import Compare
from lmshrink.machine import cpu_line
from lmshrink.errors import at_least_one, run_command

BATCH_SIZE = 128


def plain_loop(module: Compare, loader) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            inputs = {key: batch[key] for key in module.model_inputs}
            module.model(**inputs).logits.argmax(-1)
            module.reference(**inputs).logits.argmax(-1)
    return time.perf_counter() - start


def lightning_loop(module: Compare, dm: GroupedTextDataModule) -> float:
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[GroupMetrics(write_json=False)],
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=root)
        start = time.perf_counter()
        trainer.test(module, datamodule=dm, verbose=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=at_least_one, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = str(resolve_model_dir("minilm", "model_path"))
    module = Compare(model_path=path, reference_path=path)  # untrained head: the cost does not depend on it
    dm = GroupedTextDataModule(eval_batch_size=BATCH_SIZE, max_length=96)
    dm.setup("test")
    loader = dm.test_dataloader()
    plain_loop(module, loader)  # unmeasured: first-touch allocations and kernel selection
    plain, lightning = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(module, loader))
        lightning.append(lightning_loop(module, dm))
    plain_median, lightning_median = statistics.median(plain), statistics.median(lightning)
    print(f"CPU: {cpu_line()}")
    print(f"model and reference: all-MiniLM-L6-v2, test split {dm.split_size('test')} examples, batch {BATCH_SIZE}, "
          f"{torch.get_num_threads()} threads, {args.repeats} alternating repeats")
    print(f"plain loop (logits of both)        : {plain_median:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"Lightning test + GroupMetrics (all): {lightning_median:6.2f} s  "
          f"(runs: {', '.join(f'{x:.2f}' for x in lightning)})")
    print(f"ratio {lightning_median / plain_median:.3f} -> overhead {(lightning_median / plain_median - 1) * 100:+.1f} % "
          f"(target < 5 %)")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
