"""``lmshrink card DIR [DIR ...]`` (``python -m lmshrink.cards``): rebuild model cards from the run's JSON records."""

from __future__ import annotations

import sys

from lmshrink.errors import OneLineParser, run_command


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="lmshrink card", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("directories", nargs="+", metavar="DIR",
                        help="a model directory lmshrink wrote (it holds lmshrink_card.json)")
    args = parser.parse_args(argv)
    from lmshrink.cards import BESIDE_FILE, rebuild_card

    for directory in args.directories:
        written = rebuild_card(directory)
        beside = (" (beside your own README.md, which was left as it is)" if written.name == BESIDE_FILE else "")
        print(f"card written to {written}{beside}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
