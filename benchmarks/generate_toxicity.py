"""Tokens/s of the audit's generation + scoring, at each precision side by side (and vs the paths before).

Every path samples k continuations of ``--new-tokens`` tokens for the same real toxicity prompts with the same
model and scores them with alt-profanity-check, as ``GenerativeAudit`` does: ``--batch`` prompts per call, one
scorer call per batch, seeded per batch. Each ``--precision`` runs the audit's path (``sample_continuations``:
left-padded, KV cache, each prompt read once, the next token drawn among the top-k / top-p candidates) in the
Lightning precision named (``bf16-mixed``: under bf16 autocast, as the audit's test loop runs with
``--trainer.precision bf16-mixed``). ``--plain`` adds, in float32, transformers' own
``generate(num_return_sequences=k, do_sample=True, top_k=50, top_p=0.9)``, the audit's path before it read each
prompt once and drew among the candidates (same distribution, other draws: compare the mean scores); ``--naive``
adds the audit's path with one call per continuation. The paths alternate chunk by chunk, so that a change in the
machine's load hits all alike. Defaults: the generative study's audit (50 prompts, k=4, 20 tokens, 8 per batch).

    python benchmarks/generate_toxicity.py [--model smollm2] [--prompts 50] [--k 4] [--batch 8]
        [--precision 32-true bf16-mixed] [--plain] [--naive]
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
from lmshrink.machine import cpu_line, precision_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--precision", nargs="+", choices=["32-true", "bf16-mixed"], default=["32-true", "bf16-mixed"],
                        help="precisions of the batched path (the first is the reference of the ratios)")
    parser.add_argument("--naive", action="store_true", help="also time one generate call per continuation")
    parser.add_argument("--plain", action="store_true",
                        help="also time transformers' generate(num_return_sequences=k) in float32 (the path before)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model, tokenizer = load_causal_lm(args.model).eval(), load_tokenizer(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    scorer = ProfanityScorer()
    prompts = [prompt.text for prompt in toxicity_prompts(args.prompts, seed=0)]
    sample_continuations(model, tokenizer, prompts[:1], 1, 2, seed=0)  # warm-up

    def batched(chunk: list[str], seed: int, precision: str) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            texts = sample_continuations(model, tokenizer, chunk, args.k, args.new_tokens, seed=seed)
        return scorer([text for group in texts for text in group])

    @torch.no_grad()
    def plain(chunk: list[str], seed: int) -> torch.Tensor:
        tokenizer.padding_side = "left"
        encoded = tokenizer(chunk, return_tensors="pt", padding=True)
        torch.manual_seed(seed)
        output = model.generate(**encoded, do_sample=True, top_k=50, top_p=0.9, max_new_tokens=args.new_tokens,
                                num_return_sequences=args.k, pad_token_id=tokenizer.pad_token_id)
        return scorer(tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True))

    def naive(chunk: list[str], seed: int) -> torch.Tensor:
        scores = []
        for index, prompt in enumerate(chunk):
            for sample in range(args.k):
                (one,) = sample_continuations(model, tokenizer, [prompt], 1, args.new_tokens,
                                              seed=(seed + index) * args.k + sample)
                scores.append(scorer(one))
        return torch.cat(scores)

    paths = {precision: (lambda chunk, seed, p=precision: batched(chunk, seed, p)) for precision in args.precision}
    if args.naive:
        paths["naive 32-true"] = naive
    if args.plain:
        paths["plain 32-true"] = plain
    seconds = {name: 0.0 for name in paths}
    scores = {name: [] for name in paths}
    for begin in range(0, len(prompts), args.batch):  # interleaved chunk by chunk
        chunk = prompts[begin:begin + args.batch]
        for name, path in paths.items():
            start = time.perf_counter()
            scores[name].append(path(chunk, begin))
            seconds[name] += time.perf_counter() - start

    tokens = len(prompts) * args.k * args.new_tokens
    print(f"CPU: {cpu_line()}")
    for precision in args.precision:
        print(precision_line(precision))
    print(f"{len(prompts)} prompts x k={args.k} x {args.new_tokens} new tokens, {args.batch} prompts per generate call, "
          f"model {args.model}, {torch.get_num_threads()} CPU threads")
    reference = seconds[args.precision[0]]
    for name in paths:
        print(f"{name:>14}: {tokens / seconds[name]:7.1f} new tokens/s ({seconds[name]:.1f} s), "
              f"{reference / seconds[name]:.2f}x {args.precision[0]}; mean score {torch.cat(scores[name]).mean():.3f}")
    if args.plain:
        before = seconds["plain 32-true"]
        print("vs the path before: " + ", ".join(f"{name} {before / seconds[name]:.2f}x" for name in args.precision))


if __name__ == "__main__":
    main()
