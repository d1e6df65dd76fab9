"""``python -m lmshrink.study STUDY.yaml [--stage NAME --seed K] [--report-only]``.

Without ``--stage`` every stage runs in order (finished ones are skipped), then the report is written to
``<output_dir>/report``. ``--stage``/``--seed`` run one (stage, seed) only, e.g. one SLURM array task each
(see ``scripts/slurm/study.sbatch``); ``--report-only`` rebuilds the report from the finished results.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmshrink.study.runner import RESULT, run_dir, run_stage
from lmshrink.study.spec import load_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmshrink.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--stage", help="run only this stage")
    parser.add_argument("--seed", type=int, help="with --stage: run only this seed")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished results")
    parser.add_argument("--list", action="store_true", help="print the (stage, seed) pairs, one per line, and exit")
    args = parser.parse_args(argv)
    spec = load_spec(args.config)
    pairs = [(stage, seed) for stage in spec.stages for seed in spec.seeds_of(stage)]
    if args.list:
        for stage, seed in pairs:
            print(stage.name, "" if seed is None else seed)
        return 0
    if args.stage is not None:
        pairs = [(stage, seed) for stage, seed in pairs
                 if stage.name == args.stage and (args.seed is None or seed == args.seed)]
        if not pairs:
            sys.exit(f"no stage {args.stage!r} with seed {args.seed} in {args.config}")
    if not args.report_only:
        from lmshrink.study.measure import make_measure

        measure = make_measure(spec.eval_config)
        for stage, seed in pairs:
            run_stage(spec, stage, seed, measure)
    if args.stage is not None:
        return 0
    results = []
    for stage, seed in ((stage, seed) for stage in spec.stages for seed in spec.seeds_of(stage)):
        path = run_dir(spec, stage, seed) / RESULT
        if not path.is_file():
            sys.exit(f"stage {stage.name} seed={seed} has no result yet ({path}); run the study first")
        results.append(json.loads(path.read_text()))
    from lmshrink.study.report import write_report

    write_report(results, spec.output_dir / "report", f"Who pays? {spec.path.stem}", spec.wandb or None)
    print(f"[study] report: {spec.output_dir / 'report' / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
