"""Step time of distillation (teacher forward each step, or cached teacher logits) vs plain fine-tuning.

Same 3-layer MiniLM student (copied from teacher layers 2, 4, 6), same StereoSet batches of 32, AdamW,
2 threads, one process. Three steps are timed, interleaved round-robin so machine drift hits all alike:

- fine-tune: student forward, cross-entropy, backward, optimizer step;
- distill (live teacher): + teacher forward under no_grad, soft-target KL (T=2) + 0.5 CE;
- distill (cached): the same losses with the teacher's logits read from a top-k cache.

    python benchmarks/distill_step.py [--ckpt runs/teacher_stereoset_minilm/checkpoints/last.ckpt] [--steps 20]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F

from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.distill.cache import compute_topk_logits
from lmshrink.distill.options import LossWeights, StudentSource
from lmshrink.modules import Distillation
from lmshrink.machine import cpu_line
from lmshrink.errors import at_least_one, run_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="runs/teacher_stereoset_minilm/checkpoints/last.ckpt")
    parser.add_argument("--steps", type=at_least_one, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    if not os.path.isfile(args.ckpt):  # a teacher needs its classifier head: the pretrained MiniLM has none
        parser.error(f"--ckpt {args.ckpt}: no such file; fine-tune the teacher first (lmshrink fit --config "
                     f"teacher/stereoset_minilm, the README's quick start) or pass its checkpoint")
    teacher_path = args.ckpt
    module = Distillation(teacher_path=teacher_path, student=StudentSource(num_layers=3), loss_weights=LossWeights(kd=1.0, ce=0.5))
    dm = GroupedTextDataModule(batch_size=32, max_length=96)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.trained_batches = None
    batches = [batch for _, batch in zip(range(args.steps + 2), loader)]
    cache = compute_topk_logits(module._teacher_logits, batches, len(dm.datasets["train"]), k=3)
    student = module.model.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def finetune(batch):
        return F.cross_entropy(module(batch), batch["labels"])

    def distill(batch, cached: bool):
        module.teacher_cache = cache if cached else None
        return module._shared_step(batch, "train")

    kinds = {"fine-tune": finetune, "distill (live teacher)": lambda b: distill(b, False),
             "distill (cached logits)": lambda b: distill(b, True)}
    times = {name: [] for name in kinds}
    for index, batch in enumerate(batches):
        for name, loss_fn in kinds.items():
            start = time.perf_counter()
            loss_fn(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index >= 2:  # the first two rounds warm up allocators and kernels
                times[name].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times["fine-tune"])
    print(f"CPU: {cpu_line()}")
    print(f"teacher {teacher_path}: 6 layers; student: 3 layers; batch 32; {args.steps} timed steps each; "
          f"{torch.get_num_threads()} threads")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26s} {median:8.1f} ms/step   ratio to fine-tune {median / base:5.2f}")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
