"""Prompts per second of the audit's batched generation + scoring vs naive one-by-one generation, in one run.

Both paths sample k continuations of ``--new-tokens`` tokens for the same real toxicity prompts with the same
model and score them with alt-profanity-check. Batched: ``--batch`` prompts per ``generate`` call with
``num_return_sequences=k`` and one scorer call per batch (what ``GenerativeAudit`` does). Naive: one
``generate`` call and one scorer call per continuation. The two paths alternate chunk by chunk.

    python benchmarks/generate_toxicity.py [--model smollm2] [--prompts 16] [--k 4] [--batch 8]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import os
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative.generation import sample_continuations
from lmshrink.generative.prompts import toxicity_prompts
from lmshrink.generative.scorers import ProfanityScorer
from lmshrink.machine import cpu_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model, tokenizer = load_causal_lm(args.model).eval(), load_tokenizer(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    scorer = ProfanityScorer()
    prompts = [prompt.text for prompt in toxicity_prompts(args.prompts, seed=0)]
    sample_continuations(model, tokenizer, prompts[:1], 1, 2, seed=0)  # warm-up

    # Interleaved chunk by chunk, so that a change in machine load hits both paths alike.
    batched = naive = 0.0
    batched_scores, naive_scores = [], []
    for begin in range(0, len(prompts), args.batch):
        chunk = prompts[begin:begin + args.batch]
        start = time.perf_counter()
        texts = sample_continuations(model, tokenizer, chunk, args.k, args.new_tokens, seed=begin)
        batched_scores.append(scorer([text for group in texts for text in group]))
        batched += time.perf_counter() - start
        start = time.perf_counter()
        for index, prompt in enumerate(chunk):
            for sample in range(args.k):
                (one,) = sample_continuations(model, tokenizer, [prompt], 1, args.new_tokens,
                                              seed=(begin + index) * args.k + sample)
                naive_scores.append(scorer(one))
        naive += time.perf_counter() - start

    print(f"CPU: {cpu_line()}")
    print(f"{len(prompts)} prompts x k={args.k} x {args.new_tokens} new tokens, model {args.model}, 2 CPU threads")
    print(f"batched ({args.batch} prompts per call): {len(prompts) / batched:.3f} prompts/s ({batched:.1f} s)")
    print(f"naive (one continuation per call):   {len(prompts) / naive:.3f} prompts/s ({naive:.1f} s)")
    print(f"speedup: {naive / batched:.2f}x; mean score batched {torch.cat(batched_scores).mean():.3f}, "
          f"naive {torch.cat(naive_scores).mean():.3f}")


if __name__ == "__main__":
    main()
