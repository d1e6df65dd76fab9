"""K-prune vs Kwon et al. on the fine-tuned MiniLM teacher, side by side in one process, at several keep ratios.

For each FLOPs keep ratio and method: test accuracy and worst-group accuracy, the FLOPs kept (at s = the mean
dev length), the measured CPU latency of the sliced model against the dense one (same batch, alternating runs,
median) and the pruning wall time. Both methods get samples of the same size in tokens (K-prune's is sized in
tokens, Kwon's in sentences: ``--kwon-samples`` defaults to the sentence count of K-prune's token budget).

Needs the teacher exported by ``python train.py fit --config configs/teacher/stereoset_minilm.yaml``:

    python benchmarks/prune_minilm.py [--teacher runs/teacher_stereoset_minilm/model] [--tokens 100000]
        [--ratios 0.4 0.5 0.6 0.7 0.8 0.9] [--out runs/bench_prune_minilm.json] [--flop-floor]

``--flop-floor`` prunes a second time while counting the FLOPs of every matrix product per dtype, and prints the
least time they take at this CPU's measured GEMM rates (fp32 and fp64, the model's Linear shapes at 32 x 64 rows):
no implementation of the same arithmetic in the same dtypes prunes faster on this machine.
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import copy
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmshrink.backbones import accepted_inputs, load_finetuned
from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.metrics.groups import GroupAccuracy
from lmshrink.metrics.group_table import summary
from lmshrink.paths import write_new_json
from lmshrink.pruning.encoder.run import prune_encoder
from lmshrink.pruning.methods import EncoderMethod, from_short_name
from lmshrink.data.pruning_sample import draw_sample, samples_for_tokens
from lmshrink.quantize.size_latency import MatmulFlops, alternating_latency_ms, gemm_rate, linear_shapes
from lmshrink.machine import cpu_line
from lmshrink.errors import at_least_one, run_command


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader, inputs: list[str], num_groups: int) -> dict:
    metric = GroupAccuracy(num_groups, num_classes=3)
    for batch in loader:
        logits = model(**{key: batch[key] for key in inputs if key in batch}).logits
        metric.update(logits.argmax(-1), batch["labels"], batch["groups"])
    return summary(metric.compute())


def flop_floor(row: dict, dense: torch.nn.Module, sample: list[dict], method: str, seq_len: float, ratio: float,
               rates: dict[torch.dtype, float]) -> str:
    """Prune again under :class:`MatmulFlops`; record the FLOPs per dtype and their least time in ``row``."""
    with MatmulFlops() as flops:
        prune_encoder(copy.deepcopy(dense), sample, from_short_name(f"{method}-keep{ratio:g}", EncoderMethod), seq_len)
    unknown = set(flops.by_dtype) - set(rates)
    if unknown:
        raise RuntimeError(f"matrix products in {sorted(map(str, unknown))}: no GEMM rate measured for them")
    row["matmul_flops"] = {str(dtype).removeprefix("torch."): count for dtype, count in flops.by_dtype.items()}
    row["flop_floor_s"] = sum(count / rates[dtype] for dtype, count in flops.by_dtype.items())
    return ("matrix products: " + ", ".join(f"{str(dtype).removeprefix('torch.')} {count / 1e12:.2f} TFLOP at "
                                             f"{rates[dtype] / 1e9:.0f} GFLOP/s" for dtype, count in
                                             flops.by_dtype.items())
            + f": at least {row['flop_floor_s']:.1f} s of the {row['pruning_seconds']:.1f} s measured")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/teacher_stereoset_minilm/model")
    parser.add_argument("--tokens", type=at_least_one, default=100_000, help="K-prune sample size in training tokens")
    parser.add_argument("--kwon-samples", type=at_least_one, default=None, help="Kwon sample size in sentences")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    parser.add_argument("--methods", nargs="+", default=["kprune", "kwon"])
    parser.add_argument("--rounds", type=at_least_one, default=5)
    parser.add_argument("--out", default="runs/bench_prune_minilm.json")
    parser.add_argument("--flop-floor", action="store_true", help="count the matrix products' FLOPs (a second "
                        "pruning per row) and print the least time they take at this CPU's GEMM rates")
    args = parser.parse_args()
    if not Path(args.teacher).exists():
        parser.error(f"--teacher {args.teacher} does not exist: run `python train.py fit --config "
                 f"configs/teacher/stereoset_minilm.yaml` (it exports the model there) or pass a .ckpt")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    dense, _ = load_finetuned(args.teacher, 3)
    dense.eval().requires_grad_(False)
    inputs = accepted_inputs(dense)
    datamodule = GroupedTextDataModule(max_length=96)
    datamodule.setup("fit")
    num_groups = len(datamodule.group_names)
    seq_len = datamodule.mean_length("val")
    lengths = datamodule.token_lengths("train")
    kprune_rows = draw_sample(lengths, samples_for_tokens(args.tokens, sum(lengths) / len(lengths), len(lengths)), 0)
    kwon_rows = draw_sample(lengths, args.kwon_samples or len(kprune_rows), 0)
    samples = {"kprune": datamodule.rows_as_batches("train", kprune_rows, 32, inputs),
               "kwon": datamodule.rows_as_batches("train", kwon_rows, 32, inputs + ["labels"])}
    loader = datamodule.test_dataloader()
    latency_batch = datamodule.rows_as_batches("test", list(range(32)), 32, inputs)[0]
    baseline = evaluate(dense, loader, inputs, num_groups)
    print(f"CPU: {cpu_line()}")
    print(f"dense: avg_acc {baseline['avg_acc']:.4f} worst_group_acc {baseline['worst_group_acc']:.4f}; "
          f"s = {seq_len:.2f}; sample: K-prune {len(kprune_rows)} sentences, Kwon {len(kwon_rows)}", flush=True)
    rates = {dtype: gemm_rate(linear_shapes(dense), 32 * 64, dtype) for dtype in (torch.float32, torch.float64)} \
        if args.flop_floor else {}
    rows = []
    print(f"{'method':7} {'keep':>5} {'FLOPs kept':>10} {'avg acc':>8} {'worst grp':>9} {'dense ms':>9} "
          f"{'pruned ms':>9} {'speedup':>7} {'prune s':>8}", flush=True)
    for ratio in args.ratios:
        for method in args.methods:
            outcome = prune_encoder(copy.deepcopy(dense), samples[method],
                                    from_short_name(f"{method}-keep{ratio:g}", EncoderMethod), seq_len)
            pruned = outcome.model.eval()
            metrics = evaluate(pruned, loader, inputs, num_groups)
            timed = alternating_latency_ms({"dense": (dense, latency_batch), "pruned": (pruned, latency_batch)},
                                           args.rounds)
            dense_ms, pruned_ms = timed["dense"], timed["pruned"]
            record = outcome.record
            row = {"method": method, "flops_keep_ratio": ratio, "flops_kept": record["flops_kept"],
                   "avg_acc": metrics["avg_acc"], "worst_group_acc": metrics["worst_group_acc"],
                   "dense_ms": dense_ms, "pruned_ms": pruned_ms, "speedup": dense_ms / pruned_ms,
                   "pruning_seconds": record["pruning_seconds"], "heads_per_layer": record["heads_per_layer"],
                   "neurons_per_layer": record["neurons_per_layer"],
                   "kwon_tuning_stopped_at": record.get("tuning_stopped_at"), "mask_digest": record["mask_digest"],
                   "stage_seconds": record.get("stage_seconds")}
            rows.append(row)
            print(f"{method:7} {ratio:5.2f} {row['flops_kept']:10.3f} {row['avg_acc']:8.4f} "
                  f"{row['worst_group_acc']:9.4f} {dense_ms:9.1f} {pruned_ms:9.1f} {row['speedup']:7.2f} "
                  f"{row['pruning_seconds']:8.1f}  masks {row['mask_digest']}", flush=True)
            if args.flop_floor:
                print("        " + flop_floor(row, dense, samples[method], method, seq_len, ratio, rates), flush=True)
            if row["stage_seconds"]:
                print("        stages (s): " + ", ".join(f"{stage} {seconds:.1f}"
                                                      for stage, seconds in row["stage_seconds"].items()), flush=True)
    out = write_new_json(Path(args.out).parent, Path(args.out).stem, {
        "dense": baseline, "seq_len": seq_len, "tokens": args.tokens, "kprune_sentences": len(kprune_rows),
        "kwon_sentences": len(kwon_rows), "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
