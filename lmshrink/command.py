"""``lmshrink``: one command for everything lmshrink does, each subcommand a thin door to an existing entry point.

    lmshrink fit --config teacher/stereoset_minilm          # = python train.py fit --config configs/teacher/...
    lmshrink validate | test ...                             # the same LightningCLI
    lmshrink study study/stereoset_minilm                    # = python -m lmshrink.study configs/study/...
    lmshrink prune-generator --method wanda-0.5 --save-dir runs/wanda50
    lmshrink gate --reference ... --candidate ... --config teacher/stereoset_minilm
    lmshrink configs                                         # list the shipped configs
    lmshrink configs cp teacher/stereoset_minilm my.yaml     # copy one to edit
    lmshrink card runs/prune_stereoset_minilm/pruned_model   # rebuild a model's card from its records

Shipped configs are found by name from any directory (:mod:`lmshrink.shipped_configs`); a path that exists is used
as it is. Every subcommand starts quietly and turns a user mistake into one ``error:`` line (exit code 2).
"""

from __future__ import annotations

import sys

from lmshrink.quiet import quiet_third_party

SUBCOMMANDS = {
    "fit": "train (LightningCLI, as train.py fit)",
    "validate": "evaluate on the validation split (e.g. pruning)",
    "test": "evaluate on the test split (Compare, audits, quantization)",
    "study": "run a whole 'who pays?' study from one config",
    "prune-generator": "prune a causal LM one-shot and save it",
    "gate": "pass/fail for CI: does a candidate lose on some group?",
    "configs": "list the shipped configs; 'configs cp NAME DEST' copies one to edit",
    "card": "rebuild a model directory's card (README.md) from the run's JSON records",
}

USAGE = "usage: lmshrink {" + ",".join(SUBCOMMANDS) + "} ...\n\n" + "\n".join(
    f"  {name:<16} {text}" for name, text in SUBCOMMANDS.items()) + "\n\n`lmshrink SUBCOMMAND --help` for its options."


def _configs(argv: list[str]) -> int:
    from lmshrink.shipped_configs import copy_config, list_configs

    if not argv:
        print("\n".join(list_configs()))
        return 0
    if argv[0] == "cp" and len(argv) == 3:
        print(f"copied to {copy_config(argv[1], argv[2])}")
        return 0
    from lmshrink.errors import OptionError

    raise OptionError(f"configs {' '.join(argv)}: use `lmshrink configs` (list) or `lmshrink configs cp NAME DEST`")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    quiet_third_party()  # before anything imports torchao, transformers or wandb
    subcommand, rest = argv[0], argv[1:]
    from lmshrink.errors import run_command

    if subcommand in ("fit", "validate", "test"):
        from lmshrink.cli import main as cli_main
        from lmshrink.cli import own_wandb_service

        own_wandb_service()
        cli_main([subcommand, *rest], exit_on_error=True)  # exits with 2 on a user mistake, as train.py does
        return 0
    if subcommand == "study":
        from lmshrink.study.__main__ import cli as study_cli

        return study_cli(rest)
    if subcommand == "prune-generator":
        from lmshrink.prune_generator import main as prune_main

        return run_command(prune_main, rest)
    if subcommand == "gate":
        from lmshrink.gate import cli as gate_cli

        return gate_cli(rest)
    if subcommand == "configs":
        return run_command(_configs, rest)
    if subcommand == "card":
        from lmshrink.cards.__main__ import main as card_main

        return run_command(card_main, rest)
    print(f"error: unknown subcommand {subcommand!r}; choose one of {list(SUBCOMMANDS)} (see lmshrink --help)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
