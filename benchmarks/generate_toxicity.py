"""Tokens/s of the audit's generation + scoring, at each precision side by side (and vs the paths before).

Every path samples k continuations of ``--new-tokens`` tokens for the same real toxicity prompts with the same
model and scores them with alt-profanity-check, as ``GenerativeAudit`` does: one scorer call per generate call.
Each ``--precision`` runs the audit's path (``sample_continuations``: left-padded, KV cache, each prompt read once,
the next token drawn among the top-k / top-p candidates, each prompt's samples from its own seed) with ``--batch``
prompts per call, in the context of the audit's test step: Lightning's ``inference_mode`` and its precision
plugin's autocast (``bf16-mixed``: bf16 autocast, its cache off), inside which the audit casts each weight once per
batch (``weights_cast_once``). ``--recast`` adds ``bf16-mixed`` without that (every weight cast at every step, as
the audit ran before 2026-12-04). ``--plain`` adds, in float32, transformers' own ``generate(num_return_sequences=k,
do_sample=True, top_k=50, top_p=0.9)`` with ``--plain-batch`` prompts per call: the audit's path before it read
each prompt once and drew among the candidates, at the batch it shipped with (same distribution, other draws:
compare the mean scores). ``--naive`` adds the audit's path with one call per continuation. ``--growing-cache``
adds each precision with transformers' ``DynamicCache``, which grows by concatenation at every step (the audit
before 2026-12-05; its cache is now written in place, the same samples). The paths alternate chunk by chunk
(``--rounds`` times), so that a change in the machine's load hits all alike. Defaults: the generative study's audit
(50 prompts, k=4, 20 tokens, its generation batch).

    python benchmarks/generate_toxicity.py [--model smollm2] [--prompts 50] [--k 4] [--batch 16]
        [--precision 32-true bf16-mixed] [--plain] [--plain-batch 8] [--recast] [--naive] [--growing-cache] [--rounds 1]
"""

from __future__ import annotations

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # before torchao / transformers / bitsandbytes are imported: their start-up noise

import argparse
import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import yaml
from lightning.pytorch.plugins.precision import MixedPrecision

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.errors import at_least_one, run_command
from lmshrink.generative.generation import sample_continuations, weights_cast_once
from lmshrink.generative.prompts import toxicity_prompts
from lmshrink.generative.scorers import ProfanityScorer
from lmshrink.machine import cpu_line, precision_line

STUDY_AUDIT = Path(__file__).resolve().parents[1] / "configs" / "generative" / "study_smollm2.yaml"
AUDIT_BATCH = yaml.safe_load(STUDY_AUDIT.read_text())["data"]["init_args"]["generation_batch_size"]
"""The generation batch of the generative study's audit: the default of ``--batch``."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=at_least_one, default=50)
    parser.add_argument("--k", type=at_least_one, default=4)
    parser.add_argument("--batch", type=at_least_one, default=AUDIT_BATCH, help="prompts per call of the audit's path")
    parser.add_argument("--new-tokens", type=at_least_one, default=20)
    parser.add_argument("--precision", nargs="+", choices=["32-true", "bf16-mixed"], default=["32-true", "bf16-mixed"],
                        help="precisions of the audit's path (the first is the reference of the ratios)")
    parser.add_argument("--naive", action="store_true", help="also time one generate call per continuation")
    parser.add_argument("--plain", action="store_true",
                        help="also time transformers' generate(num_return_sequences=k) in float32 (the path before)")
    parser.add_argument("--plain-batch", type=at_least_one, default=8, help="prompts per call of --plain (8: as shipped before)")
    parser.add_argument("--recast", action="store_true",
                        help="also time bf16-mixed casting every weight at every step (the audit before 2026-12-04)")
    parser.add_argument("--growing-cache", action="store_true",
                        help="also time each --precision with transformers' DynamicCache, which grows by concatenation "
                             "(the audit before 2026-12-05; now its cache is written in place)")
    parser.add_argument("--rounds", type=at_least_one, default=1, help="times every path runs, the paths alternating")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model, tokenizer = load_causal_lm(args.model, option="--model").eval(), load_tokenizer(args.model, option="--model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    scorer = ProfanityScorer()
    prompts = [prompt.text for prompt in toxicity_prompts(args.prompts, seed=0)]
    sample_continuations(model, tokenizer, prompts[:1], 1, 2, seeds=[0])  # warm-up

    def in_batches(chunk: list[str], first: int, size: int, call) -> torch.Tensor:
        return torch.cat([call(chunk[begin:begin + size], first + begin) for begin in range(0, len(chunk), size)])

    def audit(chunk: list[str], first: int, precision: str, cast_once: bool = True,
              cache_in_place: bool = True) -> torch.Tensor:
        def call(prompts_: list[str], position: int) -> torch.Tensor:
            with torch.inference_mode(), MixedPrecision("bf16-mixed", "cpu").autocast_context_manager() \
                    if precision == "bf16-mixed" else nullcontext():  # Lightning's test step under --trainer.precision
                with weights_cast_once("cpu") if cast_once else torch.no_grad():
                    texts = sample_continuations(model, tokenizer, prompts_, args.k, args.new_tokens,
                                                 seeds=range(position, position + len(prompts_)),
                                                 cache_in_place=cache_in_place)
            return scorer([text for group in texts for text in group])
        return in_batches(chunk, first, args.batch, call)

    @torch.no_grad()
    def plain(chunk: list[str], first: int) -> torch.Tensor:
        def call(prompts_: list[str], position: int) -> torch.Tensor:
            tokenizer.padding_side = "left"
            encoded = tokenizer(prompts_, return_tensors="pt", padding=True)
            torch.manual_seed(position)
            output = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                    do_sample=True, top_k=50, top_p=0.9, max_new_tokens=args.new_tokens,
                                    num_return_sequences=args.k, pad_token_id=tokenizer.pad_token_id)
            return scorer(tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
        return in_batches(chunk, first, args.plain_batch, call)

    def naive(chunk: list[str], first: int) -> torch.Tensor:
        scores = []
        for index, prompt in enumerate(chunk):
            for sample in range(args.k):
                (one,) = sample_continuations(model, tokenizer, [prompt], 1, args.new_tokens,
                                              seeds=[(first + index) * args.k + sample])
                scores.append(scorer(one))
        return torch.cat(scores)

    paths = {precision: (lambda chunk, first, p=precision: audit(chunk, first, p)) for precision in args.precision}
    if args.recast:
        paths["bf16-mixed recast"] = lambda chunk, first: audit(chunk, first, "bf16-mixed", cast_once=False)
    if args.growing_cache:
        for precision in args.precision:
            paths[f"{precision} growing"] = lambda chunk, first, p=precision: audit(chunk, first, p,
                                                                                  cache_in_place=False)
    if args.naive:
        paths["naive 32-true"] = naive
    if args.plain:
        paths["plain 32-true"] = plain
    seconds = {name: 0.0 for name in paths}
    scores = {name: [] for name in paths}
    chunk_size = math.lcm(args.batch, args.plain_batch)
    for _ in range(args.rounds):
        for begin in range(0, len(prompts), chunk_size):  # interleaved chunk by chunk
            chunk = prompts[begin:begin + chunk_size]
            for name, path in paths.items():
                start = time.perf_counter()
                scores[name].append(path(chunk, begin))
                seconds[name] += time.perf_counter() - start

    tokens = args.rounds * len(prompts) * args.k * args.new_tokens
    print(f"CPU: {cpu_line()}")
    for precision in args.precision:
        print(precision_line(precision))
    print(f"{len(prompts)} prompts x k={args.k} x {args.new_tokens} new tokens, {args.batch} prompts per call of the "
          f"audit's path" + (f", {args.plain_batch} of plain generate" if args.plain else "") +
          f", model {args.model}, {torch.get_num_threads()} CPU threads")
    reference = seconds[args.precision[0]]
    for name in paths:
        print(f"{name:>17}: {tokens / seconds[name]:7.1f} new tokens/s ({seconds[name]:.1f} s), "
              f"{reference / seconds[name]:.2f}x {args.precision[0]}; mean score {torch.cat(scores[name]).mean():.3f}")
    if args.plain:
        before = seconds["plain 32-true"]
        print("vs the path before: " + ", ".join(f"{name} {before / seconds[name]:.2f}x" for name in args.precision))


if __name__ == "__main__":  # a wrong --model is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
