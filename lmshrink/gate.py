"""``python -m lmshrink.gate``: pass/fail for CI. Does the candidate lose accuracy, significantly, on some group?

    python -m lmshrink.gate --reference runs/teacher_stereoset_minilm/model --candidate runs/prune/pruned_model \\
        --config configs/teacher/stereoset_minilm.yaml [--max-worst-group-drop 0.02] [--max-group-drop 0.05] \\
        [--alpha 0.05] [--output-dir runs/gate] [-- extra train.py arguments]

Both models are evaluated on the same split of the config's data (``train.py test`` with
:class:`~lmshrink.modules.Compare`; GroupMetrics must be among the config's callbacks), the comparison record
is written to the output directory, and the rule of :mod:`lmshrink.metrics.gate_rule` decides: exit 0 when the
candidate passes, 1 naming each failed group, 2 for a usage mistake (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import asdict
from pathlib import Path

from lmshrink.cards import add_measurement
from lmshrink.data.text_files import read_json
from lmshrink.errors import MissingInputError, OneLineParser, OptionError, OutputExistsError, message, user_error
from lmshrink.metrics.gate_rule import GateThresholds, gate_failures
from lmshrink.paths import write_new_json
from lmshrink.quiet import quiet_third_party
from lmshrink.shipped_configs import resolve_config


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog="python -m lmshrink.gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="the model compared with (HF directory, hub id, .ckpt)")
    parser.add_argument("--candidate", required=True, help="the model that must not lose (same forms)")
    parser.add_argument("--config", required=True, help="train.py config whose data (and test split) is used")
    parser.add_argument("--max-worst-group-drop", type=float, default=GateThresholds.max_worst_group_drop)
    parser.add_argument("--max-group-drop", type=float, default=GateThresholds.max_group_drop)
    parser.add_argument("--alpha", type=float, default=GateThresholds.alpha, help="significance level (Holm)")
    parser.add_argument("--output-dir", default="runs/gate", help="run directory of the evaluation (new or empty)")
    args, extra = parser.parse_known_args(argv)
    return args, [arg for arg in extra if arg != "--"]


def run(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Evaluate, write ``gate.json`` beside the comparison record, and return the failures."""
    from lmshrink.cli import main

    try:
        thresholds = GateThresholds(args.max_worst_group_drop, args.max_group_drop, args.alpha)
    except ValueError as exc:
        raise OptionError(f"--{str(exc).split('=')[0].replace('_', '-')}={str(exc).split('=', 1)[1]}") from None
    args.config = resolve_config(args.config)  # a path, or a shipped config's name (teacher/stereoset_minilm)
    if not Path(args.config).is_file():
        raise MissingInputError(f"--config {args.config}: no such file (nor a shipped config: `lmshrink configs`)")
    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"--output-dir={args.output_dir!r} is a file, not a directory; name a new or empty "
                                f"directory (nothing was overwritten)")
    earlier = set(output.rglob("group_metrics_test*.json"))  # a re-run in the same directory adds a new record
    main(["test", "--config", args.config, "--model=lmshrink.modules.Compare", f"--model.model_path={args.candidate}",
          f"--model.reference_path={args.reference}", f"--trainer.default_root_dir={output}", *extra],
         exit_on_error=False)
    records = sorted(set(output.rglob("group_metrics_test*.json")) - earlier)
    if len(records) != 1:
        raise MissingInputError(f"the evaluation wrote {len(records)} group_metrics_test.json under {output}: add "
                                f"lmshrink.callbacks.GroupMetrics (once) to the callbacks of {args.config}")
    record = read_json(records[0])
    failures = gate_failures(record, thresholds)
    verdict = {"passed": not failures, "failures": failures, "thresholds": asdict(thresholds),
               "record": str(records[0]), "reference": args.reference, "candidate": args.candidate}
    verdict_path = write_new_json(records[0].parent, "gate", verdict)
    # The candidate's own card (a directory lmshrink wrote) already holds this record (GroupMetrics put it there,
    # the weights being the directory's); the verdict joins it.
    card = add_measurement(args.candidate, "gate", verdict_path, verdict)
    if card is not None:
        print(f"[lmshrink] model card updated: {card}", flush=True)
    return failures


GATE_OPTIONS = {"model_path": "--candidate", "reference_path": "--reference"}
"""Compare's option names, as train.py errors spell them, and the gate options the user actually typed."""


def gate_option_names(text: str) -> str:
    """An error about ``model_path=...`` names ``--candidate=...`` here (the gate passes it as Compare's model_path),
    wherever in the line it is named."""
    return re.sub(r"(?<![\w.-])(?:--model\.)?(model_path|reference_path)(?=[= ])",
                  lambda match: GATE_OPTIONS[match.group(1)], text)


def cli(argv: list[str] | None = None) -> int:
    quiet_third_party()  # as train.py: no Lightning hardware lines, W&B git warning or deprecations first
    try:
        args, extra = parse(argv)
        failures = run(args, extra)
    except Exception as exc:
        mistake = user_error(exc)
        if mistake is None:
            raise
        print(f"error: {gate_option_names(message(mistake))}", file=sys.stderr, flush=True)
        return 2
    if failures:
        print("gate FAILED: " + f"{args.candidate} vs {args.reference}", flush=True)
        for line in failures:
            print(f"  {line}", flush=True)
        return 1
    print(f"gate passed: no group of {args.candidate} drops significantly beyond the thresholds vs {args.reference}",
          flush=True)
    return 0


if __name__ == "__main__":
    quiet_third_party()  # before lmshrink.cli imports torchao (its "Failed to load" lines)
    from lmshrink.cli import own_wandb_service

    own_wandb_service()  # as train.py: the evaluation's W&B run under this process's own service
    sys.exit(cli())
