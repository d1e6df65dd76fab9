"""Every CPU quantization path on the fine-tuned MiniLM teacher, side by side with fp32 in one process, measured
against what this CPU's GEMM kernels can do.

Rows (``--rows``):
- ``eager``: fp32 and every in-place scheme, eagerly; the schemes in ``WITH_EMBEDDINGS`` again with int8 embeddings,
  the 4-bit ones with int4 embeddings;
- ``compiled``: ``torch.compile`` (inductor, freezing) of fp32, bf16, torchao int8 dynamic, and static int8
  (``static-int8-x86``: PT2E export + X86InductorQuantizer, calibrated on 128 seeded training sentences; its
  float32 graph, int8-mixed-bf16, and int8-mixed-bf16 with int8 attention, the last on AMX CPUs only);
  the first call per batch size (compilation) is a column of its own, never part of the latency;
- ``pruned``: K-prune at FLOPs keep 0.5 (sliced), then fp32, bf16, dynamic int8 + int8 embeddings, static int8.

For each row: memory, latency at batch 1 and 32 (64 tokens) as ratios to fp32 eager and to bf16 eager, and
accuracy / worst-group accuracy / per-group deltas to fp32 on the StereoSet test split. "Hardware bound": plain
GEMMs of the model's own Linear shapes at 32 x 64 tokens in fp32, bf16 and int8 (``torch._int_mm``) give this CPU's
GEMM throughput; ``bound`` is the share of a row's batch-32 latency that its Linears would take at that throughput
(1.0 = nothing but GEMMs at the kernel's speed).

Latency is paired: every row is timed in alternating rounds with fp32 eager and bf16 eager (``--rounds`` rounds of
``--repeats`` calls each, medians), and its ratios are to those references timed beside it, so that a drift in the
machine's speed over the run's 20 minutes hits a row and its references alike (``fp32 ms`` shows the reference).

Needs the teacher checkpoint from ``python train.py fit --config configs/teacher/stereoset_minilm.yaml``:

    python benchmarks/quantize_minilm.py [--ckpt runs/teacher_stereoset_minilm/checkpoints/best-step=316.ckpt]
        [--rows eager compiled pruned] [--prune-tokens 100000]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import copy
import glob
import os
import time
import traceback
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmshrink.datamodules import GroupedTextDataModule
from lmshrink.metrics.groups import GroupAccuracy
from lmshrink.modules import TeacherFineTune
from lmshrink.machine import cpu_line
from lmshrink.quantize.static_int8 import amx_tiles_usable, int8_mixed_bf16_here
from lmshrink.pruning.encoder.run import prune_encoder
from lmshrink.pruning.methods import KPrune
from lmshrink.data.pruning_sample import draw_sample, samples_for_tokens
from lmshrink.quantize import SCHEMES, apply, check_supported
from lmshrink.quantize.compiled import compile_for_inference, first_call_seconds
from lmshrink.quantize.size_latency import alternating_latency_ms, gemm_rate, linear_flops, linear_shapes, memory_bytes
from lmshrink.errors import at_least_one, run_command

WITH_EMBEDDINGS = ("dynamic-int8", "torchao-int8-dynamic", "torchao-int8-weight", "bf16")
"""Schemes also measured with ``embeddings="int8"`` (the rows ``<scheme>+emb-int8``)."""
INT4_WITH_EMBEDDINGS = ("bnb-nf4", "torchao-int4-weight")
"""4-bit weight schemes also measured with int4 embeddings (the rows ``<scheme>+emb-int4``)."""
BOUND_DTYPE = {None: torch.float32, "bf16": torch.bfloat16, "dynamic-int8": torch.int8,
               "torchao-int8-dynamic": torch.int8, "static-int8-x86": torch.int8, "bnb-int8": torch.int8,
               "bnb-nf4": torch.bfloat16, "bnb-fp4": torch.bfloat16}
"""The GEMM dtype whose throughput bounds a path: bitsandbytes' CPU kernels run LLM.int8 through ``torch._int_mm``
and 4-bit through a bf16 kernel; torchao's weight-only schemes dequantize to float32."""
LATENCY_TOKENS = 64


@torch.inference_mode()
def evaluate(module: TeacherFineTune, model: torch.nn.Module, loader, num_groups: int,
             pad_to: int | None = None) -> dict:
    """Accuracy per group on ``loader``; ``pad_to``: every batch padded to that many tokens (masked, so the
    predictions are those of the unpadded batch), for a graph compiled per input shape (int8 attention)."""
    metric = GroupAccuracy(num_groups, num_classes=3)
    module.model = model
    for batch in loader:
        batch = {key: value.to(module.device) if isinstance(value, torch.Tensor) else value
                 for key, value in batch.items()}
        if pad_to is not None:
            batch |= {key: torch.nn.functional.pad(batch[key], (0, pad_to - batch[key].shape[1]))
                      for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
        metric.update(module(batch).cpu(), batch["labels"].cpu(), batch["groups"].cpu())
    results = metric.compute()
    return {key: float(results[key]) for key in ("avg_acc", "worst_group_acc")} | {"group_acc": results["group_acc"]}


def pruned_teacher(float_model: torch.nn.Module, dm: GroupedTextDataModule, tokens: int) -> torch.nn.Module:
    """K-prune at FLOPs keep 0.5 on a seeded sample of ``tokens`` training tokens (the pruning defaults), sliced."""
    lengths = dm.token_lengths("train")
    rows = draw_sample(lengths, samples_for_tokens(tokens, sum(lengths) / len(lengths), len(lengths)), 0)
    batches = dm.rows_as_batches("train", rows, 32, ["input_ids", "attention_mask", "token_type_ids"])
    outcome = prune_encoder(copy.deepcopy(float_model), batches, KPrune(flops_keep_ratio=0.5), dm.mean_length("val"))
    print(f"K-prune 0.5: {outcome.record['pruning_seconds']:.0f} s, FLOPs kept {outcome.record['flops_kept']:.3f}",
          flush=True)
    return outcome.model.eval()


def build(source: torch.nn.Module, scheme: str | None, embeddings: str, compiled: bool,
          calibration: list[dict], mixed_bf16: bool | None = None,
          int8_attention: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the module to run, the module holding the weights) for one row (``mixed_bf16``: a calibrated scheme's
    graph under bf16 autocast, forced on or off; None: as the library decides on this CPU; ``int8_attention``:
    its attention in int8 too, opt-in)."""
    model = copy.deepcopy(source).eval()
    if scheme is None:
        return (compile_for_inference(model) if compiled else model), model
    calibrated = SCHEMES[scheme].calibrated
    graph = {"mixed_bf16": mixed_bf16, "int8_attention": int8_attention} if calibrated else {}
    quantized = apply(model, scheme, embeddings=embeddings, calibration=calibration if calibrated else None,
                      compile=compiled or calibrated, **graph)
    return quantized.runnable, quantized.weights


def fastest_within(rows: dict[str, dict], tolerance: float) -> str:
    """The one line a user acts on: the fastest row at batch 32 (its latency over the fp32 reference timed beside it)
    whose worst-group accuracy is within ``tolerance`` of fp32's, on this CPU."""
    floor = rows["fp32"]["worst_group_acc"] - tolerance
    eligible = {name: row["lat32_ms"] / row["fp32_lat32_ms"] for name, row in rows.items()
                if row["worst_group_acc"] >= floor}
    name = min(eligible, key=eligible.get)
    row, base = rows[name], rows["fp32"]
    return (f"fastest at batch 32 within {tolerance:g} of fp32's worst-group accuracy on {cpu_line()}: {name} "
            f"({eligible[name]:.2f}x fp32 latency; worst group {row['worst_group_acc']:.4f} vs "
            f"{base['worst_group_acc']:.4f}, average {row['avg_acc']:.4f} vs {base['avg_acc']:.4f}; per-group deltas "
            f"below)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="TeacherFineTune checkpoint (default: the teacher run's best)")
    parser.add_argument("--rounds", type=at_least_one, default=5, help="alternating timing rounds per row and batch size")
    parser.add_argument("--repeats", type=at_least_one, default=3, help="calls per model and round (median over all)")
    parser.add_argument("--rows", nargs="+", choices=["eager", "compiled", "pruned"],
                        default=["eager", "compiled", "pruned"])
    parser.add_argument("--prune-tokens", type=at_least_one, default=100_000, help="K-prune sample for the pruned rows")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="worst-group accuracy drop from fp32 a scheme may have to count in the summary line")
    parser.add_argument("--only", nargs="+", default=None, metavar="ROW",
                        help="measure only these rows (by the names printed in the table; fp32 and the bf16 reference "
                        "are always timed), e.g. --only 'bf16 compiled' 'static-int8-x86+emb-int8 mixed-bf16'")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (static int8 is CPU-only, "
                        "int4 tinygemm CUDA-only: each row a device cannot run is skipped with its reason)")
    args = parser.parse_args()
    ckpt = args.ckpt or next(iter(sorted(glob.glob("runs/teacher_stereoset_minilm/checkpoints/best-*.ckpt"))), None)
    if ckpt is None or not os.path.isfile(ckpt):
        parser.error("no teacher checkpoint: run `python train.py fit --config configs/teacher/stereoset_minilm.yaml` "
                 "or pass --ckpt")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    device = torch.device(args.device)
    module = TeacherFineTune.load_from_checkpoint(ckpt, map_location=device).eval()
    dm = GroupedTextDataModule(max_length=96)
    dm.setup("test")
    loader = dm.test_dataloader()
    float_model = module.model
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    calibration = [{key: value.to(device) for key, value in batch.items()}
                   for batch in dm.rows_as_batches("train", draw_sample(dm.token_lengths("train"), 128, 0), 32, inputs)]
    generator = torch.Generator().manual_seed(0)
    latency_inputs = {
        size: {"input_ids": torch.randint(1000, 2000, (size, LATENCY_TOKENS), generator=generator),
               "attention_mask": torch.ones(size, LATENCY_TOKENS, dtype=torch.long),
               "token_type_ids": torch.zeros(size, LATENCY_TOKENS, dtype=torch.long)}
        for size in (1, 32)
    }

    rows_wanted = [("fp32", None, "float", False, None)]
    if "eager" in args.rows:
        rows_wanted += [(scheme, scheme, "float", False, None) for scheme, spec in SCHEMES.items()
                        if not spec.calibrated]
        rows_wanted += [(f"{scheme}+emb-int8", scheme, "int8", False, None) for scheme in WITH_EMBEDDINGS]
        rows_wanted += [(f"{scheme}+emb-int4", scheme, "int4", False, None) for scheme in INT4_WITH_EMBEDDINGS]
    if "compiled" in args.rows:
        rows_wanted += [("fp32 compiled", None, "float", True, None), ("bf16 compiled", "bf16", "float", True, None),
                        ("torchao-int8-dynamic compiled", "torchao-int8-dynamic", "float", True, None),
                        ("static-int8-x86", "static-int8-x86", "float", True, None),
                        ("static-int8-x86+emb-int8", "static-int8-x86", "int8", True, None),
                        # every graph on every CPU it runs on: the library picks int8-mixed-bf16 on AMX only;
                        # int8 attention is opt-in, and its kernel exists for AMX alone
                        ("static-int8-x86+emb-int8 fp32 graph", "static-int8-x86", "int8", True, None, False, False),
                        ("static-int8-x86+emb-int8 mixed-bf16", "static-int8-x86", "int8", True, None, True, False),
                        ("static-int8-x86+emb-int8 mixed-bf16 int8-attention", "static-int8-x86", "int8", True, None,
                         True, True)]
    if "pruned" in args.rows:
        rows_wanted += [("kprune-0.5 fp32", None, "float", False, "pruned"),
                        ("kprune-0.5 bf16", "bf16", "float", False, "pruned"),
                        ("kprune-0.5 dynamic-int8+emb-int8", "dynamic-int8", "int8", False, "pruned"),
                        ("kprune-0.5 static-int8-x86+emb-int8", "static-int8-x86", "int8", True, "pruned")]
    if args.only:
        unknown = sorted(set(args.only) - {row[0] for row in rows_wanted})
        if unknown:
            parser.error(f"--only: no row named {unknown[0]!r} among --rows {' '.join(args.rows)}; the rows: "
                     + ", ".join(repr(row[0]) for row in rows_wanted))
        rows_wanted = [row for row in rows_wanted if row[0] == "fp32" or row[0] in args.only]
    latency_inputs = {size: {key: value.to(device) for key, value in batch.items()}
                      for size, batch in latency_inputs.items()}
    runnable_here = []
    for row in rows_wanted:
        try:
            if row[1] is not None:
                check_supported(row[1], device)
            if row[6:] == (True,) and not amx_tiles_usable():
                raise ValueError("int8 attention's kernel is generated for AMX, which this CPU cannot use")
            runnable_here.append(row)
        except ValueError as reason:
            print(f"{row[0]}: skipped ({reason})")
    rows_wanted = runnable_here
    sources = {None: float_model}
    references = {"fp32": float_model}
    if any(row[1] == "bf16" for row in rows_wanted) or args.only:
        references["bf16"] = build(float_model, "bf16", "float", False, calibration)[0]
    rows, failed = {}, {}
    for name, scheme, embeddings, compiled, source, *graph in rows_wanted:
        if source not in sources:  # pruned once, when its first row comes
            sources[source] = pruned_teacher(float_model, dm, args.prune_tokens)
        start = time.perf_counter()
        try:
            runnable, stored = build(sources[source], scheme, embeddings, compiled, calibration, *graph)
            row = {"build_s": time.perf_counter() - start, "memory_mb": memory_bytes(stored) / 2**20,
                   "linear_flops": linear_flops(sources[source], 32 * LATENCY_TOKENS)}
            row["first_call_s"] = sum(first_call_seconds(runnable, batch) for batch in latency_inputs.values()) \
                if compiled else 0.0
            if name in references:  # the eager fp32 and bf16 rows are the references themselves
                references[name] = runnable
            for size, batch in latency_inputs.items():
                timed = alternating_latency_ms({"row": (runnable, batch)} | {
                    reference: (model, batch) for reference, model in references.items() if model is not runnable},
                    rounds=args.rounds, repeats=args.repeats)
                row[f"lat{size}_ms"] = timed["row"]
                row |= {f"{reference}_lat{size}_ms": timed.get(reference, timed["row"]) for reference in references}
            row |= evaluate(module, runnable, loader, len(dm.group_names),
                            pad_to=dm.hparams.max_length if getattr(runnable, "int8_attention", False) else None)
        except Exception as error:  # one row's failure on a new machine must not cost the other rows' figures
            failed[name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            print(f"FAILED {name}: {failed[name]}", flush=True)
            continue
        row["bound_dtype"] = BOUND_DTYPE.get(scheme, torch.float32)
        rows[name] = row
        versus_bf16 = f", {row['lat32_ms'] / row['bf16_lat32_ms']:.2f}x bf16" if "bf16" in references else ""
        print(f"measured {name} ({time.perf_counter() - start:.0f} s): batch 32 {row['lat32_ms']:.1f} ms "
              f"({row['lat32_ms'] / row['fp32_lat32_ms']:.2f}x fp32{versus_bf16}), batch 1 {row['lat1_ms']:.1f} ms, "
              f"avg {row['avg_acc']:.4f}, worst {row['worst_group_acc']:.4f}", flush=True)

    shapes = linear_shapes(float_model)
    rates = {dtype: gemm_rate(shapes, 32 * LATENCY_TOKENS, dtype, device=device)
             for dtype in (torch.float32, torch.bfloat16, torch.int8)}
    dense_flops = linear_flops(float_model, 32 * LATENCY_TOKENS)
    base = rows["fp32"]
    print(f"\nMiniLM teacher {os.path.basename(ckpt)}, StereoSet test ({len(dm.datasets['test'])} examples, "
          f"{len(dm.group_names)} groups), {device}, {torch.get_num_threads()} CPU threads; ratios are to fp32 eager "
          f"(and bf16 eager) timed beside each row")
    print(f"CPU: {cpu_line()}; static-int8-x86 here runs "
          + ("int8-mixed-bf16 (AMX)" if int8_mixed_bf16_here() else "its float32 graph (no AMX)")
          + ("; int8 attention (torchao's AMX kernel, opt-in) can run here" if amx_tiles_usable()
             else "; int8 attention (AMX only) cannot run here"))
    print("hardware bound, GEMMs of the model's Linear shapes at 32 x 64 tokens: " + ", ".join(
        f"{str(dtype).removeprefix('torch.')} {rate / 1e9:.0f} GFLOP/s ({dense_flops / rate * 1000:.1f} ms for the "
        f"dense model's Linears)" for dtype, rate in rates.items()))
    print(f"{'path':38s} {'mem MB':>7s} {'ratio':>6s} {'lat1 ms':>8s} {'ratio':>6s} {'lat32 ms':>8s} {'ratio':>6s} "
          f"{'vs bf16':>7s} {'fp32 ms':>7s} {'bound':>6s} {'compile s':>9s} {'avg acc':>7s} {'worst':>6s} "
          f"{'d worst':>7s}")
    for name, row in rows.items():
        bound = row["linear_flops"] / rates[row["bound_dtype"]] * 1000 / row["lat32_ms"]
        versus_bf16 = f"{row['lat32_ms'] / row['bf16_lat32_ms']:7.2f}" if "bf16" in references else f"{'':>7s}"
        print(f"{name:38s} {row['memory_mb']:7.1f} {row['memory_mb'] / base['memory_mb']:6.2f} {row['lat1_ms']:8.1f} "
              f"{row['lat1_ms'] / row['fp32_lat1_ms']:6.2f} {row['lat32_ms']:8.1f} "
              f"{row['lat32_ms'] / row['fp32_lat32_ms']:6.2f} "
              f"{versus_bf16} {row['fp32_lat32_ms']:7.1f} {bound:6.2f} {row['first_call_s']:9.1f} "
              f"{row['avg_acc']:7.4f} "
              f"{row['worst_group_acc']:6.4f} {row['worst_group_acc'] - base['worst_group_acc']:+7.4f}")
    print(fastest_within(rows, args.tolerance))
    for name, reason in failed.items():
        print(f"FAILED {name}: {reason}")
    print("\nper-group accuracy delta to fp32 (points): " + ", ".join(
        f"{index}={group}" for index, group in enumerate(dm.group_names)))
    for name, row in rows.items():
        deltas = (row["group_acc"] - base["group_acc"]) * 100
        print(f"{name:38s} " + " ".join(f"{float(delta):+6.1f}" for delta in deltas))


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
