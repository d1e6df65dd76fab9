"""``python -m lmshrink.study STUDY.yaml [--stage NAME --seed K] [--report-only [RESULTS.jsonl]]``.

The whole study (every stage's scheme, options and paths) is checked before the first stage runs. Without
``--stage`` every stage runs in order (finished ones are skipped), then the report is written to
``<output_dir>/report``. ``--stage``/``--seed`` run one (stage, seed) only, e.g. one SLURM array task each
(see ``scripts/slurm/study.sbatch``); ``--report-only`` rebuilds the report from a ``results.jsonl`` (default:
``<output_dir>/report/results.jsonl``) without running or timing anything; ``--list`` prints every (stage, seed)
with its depth, which ``scripts/slurm/submit_study.sh`` turns into one array job per depth.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from lmshrink.quiet import quiet_third_party

quiet_third_party()  # an entry point: before the imports below load torchao, torch and transformers (as train.py)

from lmshrink.data.text_files import read_json, read_json_lines
from lmshrink.machine import precision_line, resolve_precision
from lmshrink.errors import InputFileError, MissingInputError, OneLineParser, OptionError, run_command
from lmshrink.shipped_configs import resolve_config
from lmshrink.study.children import start as start_children
from lmshrink.study.generative import measure_causal_lm, run_generative_stage
from lmshrink.study.generative_report import write_generative_report
from lmshrink.study.report import write_report
from lmshrink.study.runner import RESULT, run_dir, run_stage
from lmshrink.study.schedule import run_all, taking_turns
from lmshrink.study.spec import Stage, StudySpec, load_spec
from lmshrink.study.validate import check_study


def depth(spec: StudySpec, stage: Stage) -> int:
    """How many stages run before this one on its chain (0 for the teacher): one SLURM wave per depth."""
    return 0 if stage.source is None else 1 + depth(spec, spec.stage(stage.source))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m lmshrink.study", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--stage", help="run only this stage")
    parser.add_argument("--seed", type=int, help="with --stage: run only this seed")
    parser.add_argument("--report-only", nargs="?", const="", metavar="RESULTS.jsonl",
                        help="only rebuild the report from a results.jsonl (default: the study's own), running and "
                             "timing nothing")
    parser.add_argument("--list", action="store_true",
                        help="print 'depth stage seed' per run (depth: stages it waits for), and exit")
    parser.add_argument("--latency-rounds", type=int, default=5, help="alternating timing rounds per model")
    parser.add_argument("--latency-compiled", action="store_true",
                        help="time every model through torch.compile (inductor, freezing); compilation happens in the "
                             "warm-up call and is not timed")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, each with cores/N threads, each after the runs it reads (default 1)")
    parser.add_argument("--train-arg", action="append", default=[],
                        help="extra argument for every train.py call (repeatable), e.g. --train-arg=--trainer.devices=4")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise OptionError(f"--jobs {args.jobs}: must be >= 1")
    spec = load_spec(resolve_config(args.config))  # a path, or a shipped study's name (study/stereoset_minilm)
    spec = replace(spec, common_args=spec.common_args + tuple(args.train_arg))
    pairs = [(stage, seed) for stage in spec.stages for seed in spec.seeds_of(stage)]
    if args.list:
        for stage, seed in pairs:
            print(depth(spec, stage), stage.name, "" if seed is None else seed)
        return 0
    if args.report_only is not None:
        return report_from_jsonl(spec, Path(args.report_only or spec.output_dir / "report" / "results.jsonl"))
    if spec.generative:
        if args.latency_compiled or args.latency_rounds != parser.get_default("latency_rounds"):
            raise OptionError("--latency-rounds / --latency-compiled: a generative study measures no latency (time "
                              "a pruned generator with benchmarks/prune_smollm2.py)")
    check_study(spec)  # every stage's options, before the first one runs
    start_children()  # the runs' pre-imported forkserver imports while the measurements' data loads
    if args.stage is not None:
        pairs = [(stage, seed) for stage, seed in pairs
                 if stage.name == args.stage and (args.seed is None or seed == args.seed)]
        if not pairs:
            raise OptionError(f"--stage {args.stage} --seed {args.seed}: no such run in {args.config} (--list "
                              f"prints every stage and seed)")
    if spec.generative:
        measure, run = measure_causal_lm, run_generative_stage
    else:
        from lmshrink.study.measure import StudyMeasure

        measure, run = StudyMeasure(spec.eval_config, spec.common_args), run_stage
    print(f"[study] {precision_line(resolve_precision(spec.precision))} (quantize stages: 32-true); "
          f"{args.jobs} run{'s' if args.jobs > 1 else ''} at once", flush=True)
    shared = taking_turns(measure) if args.jobs > 1 else measure
    run_all(spec, pairs, lambda stage, seed: run(spec, stage, seed, shared), args.jobs)
    if args.stage is not None:
        return 0
    results = []
    for stage, seed in ((stage, seed) for stage in spec.stages for seed in spec.seeds_of(stage)):
        path = run_dir(spec, stage, seed) / RESULT
        if not path.is_file():
            raise MissingInputError(f"stage {stage.name} seed={seed} has no result yet ({path}); run the study first")
        results.append(read_json(path))
    if spec.generative:
        return _report(spec, results)
    # Latency of every model side by side, now, in this process: stage-time timings ran under varying load.
    models = {f"{r['stage']}/{r['seed']}": (r["model_dir"], r["scheme"], r.get("calibration_seed")) for r in results}
    latencies = measure.latencies(models, rounds=args.latency_rounds, compiled=args.latency_compiled)
    for result in results:
        result["latency_ms"], result["latency_compiled"] = latencies[f"{result['stage']}/{result['seed']}"]
    return _report(spec, results)


def _report(spec: StudySpec, results: list[dict]) -> int:
    write = write_generative_report if spec.generative else write_report
    write(results, spec.output_dir / "report", f"Who pays? {spec.path.stem}", spec.wandb or None)
    print(f"[study] report: {spec.output_dir / 'report' / 'report.md'}", flush=True)
    return 0


def report_from_jsonl(spec: StudySpec, results_file: Path) -> int:
    """The report rebuilt from recorded results alone (e.g. the shipped ``docs/results/study/results.jsonl``)."""
    if not results_file.is_file():
        raise MissingInputError(f"--report-only: {results_file} does not exist; run the study first, or name a "
                                f"results.jsonl")
    results = read_json_lines(results_file)
    if not results:
        raise InputFileError(f"--report-only: {results_file} holds no result")
    kinds = {"generative" if result.get("task") == "generative" else "classification" for result in results}
    wanted = "generative" if spec.generative else "classification"
    if kinds != {wanted}:
        raise InputFileError(f"--report-only: {results_file} holds results of a {' and a '.join(sorted(kinds))} "
                             f"study, but {spec.path} is a {wanted} study: pass the results of this study")
    return _report(spec, results)


def cli(argv: list[str] | None = None) -> int:
    """``main`` with a user mistake printed as one ``error:`` line (exit code 2), as ``train.py`` does."""
    return run_command(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
