"""Every CPU quantization scheme on the fine-tuned MiniLM teacher, side by side with fp32 in one process.

For each scheme (and for the schemes in ``WITH_EMBEDDINGS`` again with the embedding tables in int8): memory and
on-disk size, forward latency at batch 1 and 32 (64 tokens, median of repeated runs), and accuracy / worst-group
accuracy on the StereoSet test split, as ratios to fp32 measured in the same run. Needs the teacher checkpoint from

    python train.py fit --config configs/teacher/stereoset_minilm.yaml

    python benchmarks/quantize_minilm.py [--ckpt runs/teacher_stereoset_minilm/checkpoints/best-step=316.ckpt]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import copy
import glob
import os
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.metrics.groups import GroupAccuracy
from lmshrink.modules import TeacherFineTune
from lmshrink.quantize import SCHEMES, quantize_model
from lmshrink.quantize.measure import disk_bytes, latency_ms, memory_bytes
from lmshrink.quantize.schemes import KEEP_IN_FLOAT


WITH_EMBEDDINGS = ("dynamic-int8", "torchao-int8-dynamic", "torchao-int8-weight", "bf16")
"""Schemes also measured with ``embeddings="int8"`` (the rows ``<scheme>+emb-int8``)."""


@torch.inference_mode()
def evaluate(module: TeacherFineTune, model: torch.nn.Module, loader, num_groups: int) -> dict:
    metric = GroupAccuracy(num_groups, num_classes=3)
    module.model = model
    for batch in loader:
        metric.update(module(batch), batch["labels"], batch["groups"])
    return {key: float(value) for key, value in metric.compute().items() if value.dim() == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="TeacherFineTune checkpoint (default: the teacher run's best)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    ckpt = args.ckpt or next(iter(sorted(glob.glob("runs/teacher_stereoset_minilm/checkpoints/best-*.ckpt"))), None)
    if ckpt is None or not os.path.isfile(ckpt):
        sys.exit("no teacher checkpoint: run `python train.py fit --config configs/teacher/stereoset_minilm.yaml` "
                 "or pass --ckpt")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    module = TeacherFineTune.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = GroupedTextDataModule(max_length=96)
    dm.setup("test")
    loader = dm.test_dataloader()
    float_model = module.model
    generator = torch.Generator().manual_seed(0)
    latency_inputs = {
        size: {"input_ids": torch.randint(1000, 2000, (size, 64), generator=generator),
               "attention_mask": torch.ones(size, 64, dtype=torch.long),
               "token_type_ids": torch.zeros(size, 64, dtype=torch.long)}
        for size in (1, 32)
    }

    def measure(model: torch.nn.Module) -> dict:
        row = {"memory_mb": memory_bytes(model) / 2**20, "disk_mb": disk_bytes(model) / 2**20}
        for size, inputs in latency_inputs.items():
            row[f"lat{size}_ms"] = latency_ms(model, inputs, repeats=args.repeats)
        row.update(evaluate(module, model, loader, len(dm.group_names)))
        return row

    rows = {"fp32": measure(float_model)}
    for scheme in SCHEMES:
        if SCHEMES[scheme].needs_cuda:
            print(f"{scheme}: skipped on CPU ({SCHEMES[scheme].needs_cuda})")
            continue
        model = copy.deepcopy(float_model)
        start = time.perf_counter()
        result = quantize_model(model, scheme, list(KEEP_IN_FLOAT))
        seconds = time.perf_counter() - start
        rows[scheme] = measure(model) | {"quantize_s": seconds, "layers": len(result.quantized)}
    for scheme in WITH_EMBEDDINGS:  # the embedding tables quantized too (int8, a scale per row)
        model = copy.deepcopy(float_model)
        quantize_model(model, scheme, list(KEEP_IN_FLOAT), embeddings="int8")
        rows[f"{scheme}+emb-int8"] = measure(model)
    base = rows["fp32"]
    print(f"\nMiniLM teacher {os.path.basename(ckpt)}, StereoSet test ({len(dm.datasets['test'])} examples, "
          f"{len(dm.group_names)} groups), {torch.get_num_threads()} threads; ratios are scheme / fp32 in this run")
    print(f"{'scheme':22s} {'mem MB':>7s} {'ratio':>6s} {'disk MB':>7s} {'lat1 ms':>8s} {'ratio':>6s} "
          f"{'lat32 ms':>8s} {'ratio':>6s} {'avg acc':>7s} {'worst':>6s} {'d worst':>7s}")
    for name, row in rows.items():
        print(f"{name:22s} {row['memory_mb']:7.1f} {row['memory_mb'] / base['memory_mb']:6.2f} {row['disk_mb']:7.1f} "
              f"{row['lat1_ms']:8.1f} {row['lat1_ms'] / base['lat1_ms']:6.2f} {row['lat32_ms']:8.1f} "
              f"{row['lat32_ms'] / base['lat32_ms']:6.2f} {row['avg_acc']:7.4f} {row['worst_group_acc']:6.4f} "
              f"{row['worst_group_acc'] - base['worst_group_acc']:+7.4f}")


if __name__ == "__main__":
    main()
