"""A generative study's stages: build each compressed causal LM, audit it per seed, record its per-item outcomes.

Every (stage, seed) lives in ``<output_dir>/<stage>/seed<k>`` like a classification study's:

- ``run/``: the build: ``python -m lmshrink.prune_generator`` (prune; calibrated on the seed's windows when the
  stage is seeded) or ``train.py fit`` of a causal ``Distillation`` (distill, resumed from ``last.ckpt`` when
  killed); none for the teacher (a given model) and quantize (applied when the model is audited);
- ``eval/``: ``train.py test`` of a ``GenerativeAudit`` (the study's ``eval_config``) of that model alone, sampling
  with the seed, a quantize stage's scheme applied to the audited model (``--model.model_scheme``), in the study's
  precision (``bf16-mixed``: generation and pair likelihoods under bf16 autocast; the windowed perplexity, computed
  after the test loop, stays float32);
- ``result.json``: written last: the audit's summary, every item's outcome (for intervals over seeds and the
  paired bootstrap against the teacher, :mod:`lmshrink.generative.paired`), size and parameters.

A deterministic (unseeded) build is made again in every seed's directory: each seed's run stands alone (SLURM
array tasks never share a directory).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmshrink.generative.paired import audit_items, fingerprint
from lmshrink.modules.audit_variants import REFERENCE
from lmshrink.machine import cpu_line
from lmshrink.study.runner import (TRAIN_PY, build_in, model_of, precision_of, recorded, run_dir, run_python, set_aside,
                                   the_record)
from lmshrink.study.spec import Stage, StudySpec, has_build_run

PRUNING_KEYS = ("method", "spec", "sparsity_reached", "pruning_seconds", "calibration", "flops_kept")
"""Copied from the pruned model's ``pruning_record.json`` into the result, when present."""


def build_argv(spec: StudySpec, stage: Stage, seed: int | None) -> list[str] | None:
    """``python`` arguments of the run that builds the stage's model; None for the teacher and quantize."""
    if not has_build_run(spec.task, stage.kind):
        return None
    directory = run_dir(spec, stage, seed) / "run"
    source = spec.stage(stage.source)
    source_model, scheme = model_of(spec, source, seed)
    if scheme is not None:
        raise ValueError(f"stage {stage.name}: cannot {stage.kind} the quantized output of {source.name}")
    if stage.kind == "prune":
        seed_flags = ["--seed", str(seed)] if stage.seeded and seed is not None else []
        # the audit measures held-out perplexity of every model on the same windows: the pruner's own is skipped
        return ["-m", "lmshrink.prune_generator", "--model", str(source_model), "--method", stage.method,
                "--save-dir", str(directory / "model"), "--heldout-windows", "0", *seed_flags, *stage.args]
    seed_args = [f"--seed_everything={seed}"] if stage.seeded and seed is not None else []
    return [str(TRAIN_PY), "fit", "--config", stage.config, *seed_args, f"--trainer.default_root_dir={directory}",
            f"--trainer.precision={precision_of(spec, stage)}", f"--model.teacher_path={source_model}",
            f"--model.student_save_dir={directory / 'model'}",
            *spec.common_args, *stage.args]


def eval_args(spec: StudySpec, stage: Stage, seed: int | None) -> list[str]:
    """``train.py test`` arguments auditing the stage's model alone (no copies), sampling with ``seed``."""
    model_dir, scheme = model_of(spec, stage, seed)
    args = ["--config", spec.eval_config, f"--seed_everything={seed}", f"--model.model_path={model_dir}",
            f"--model.seed={seed}", "--model.students=null", "--model.sparsities=[]", "--model.quantize=[]",
            "--model.prune=[]", f"--trainer.default_root_dir={run_dir(spec, stage, seed) / 'eval'}",
            f"--trainer.precision={precision_of(spec, stage)}"]
    if scheme is not None:
        args.append(f"--model.model_scheme={scheme}")
    return [*args, *spec.common_args, *spec.eval_args]


def run_generative_stage(spec: StudySpec, stage: Stage, seed: int | None, measure) -> dict:
    """Build, audit and measure one (stage, seed) unless its result exists; returns the result."""
    directory = run_dir(spec, stage, seed)

    def work(log: Path) -> dict:
        argv = build_argv(spec, stage, seed)
        if argv is not None:
            build_in(directory / "run", argv, log, fit=stage.kind == "distill")
        set_aside(directory / "eval")
        run_python([str(TRAIN_PY), "test", *eval_args(spec, stage, seed)], log)
        record = the_record(directory / "eval", "generative_audit*.json")
        items = audit_items(record, REFERENCE)
        model_dir, scheme = model_of(spec, stage, seed)
        result = {"task": "generative", "stage": stage.name, "kind": stage.kind, "from": stage.source, "seed": seed,
                  "scheme": scheme, "model_dir": str(model_dir), "eval_set": fingerprint(items),
                  "scorer": record["scorer"], "summary": record["models"][REFERENCE], "items": items,
                  "run_precision": precision_of(spec, stage), "cpu": cpu_line(),
                  **measure(model_dir, scheme)}
        pruning = model_dir / "pruning_record.json"
        if stage.kind == "prune" and pruning.is_file():
            record = json.loads(pruning.read_text())
            result["pruning"] = {key: record[key] for key in PRUNING_KEYS if key in record}
        return result

    return recorded(directory, stage, seed, work, indent=None)  # items make it long: one line


def measure_causal_lm(model_dir: str | Path, scheme: str | None) -> dict:
    """Parameters of the float model (sliced decoders have fewer) and its size in memory as audited."""
    from lmshrink.backbones import load_causal_lm
    from lmshrink.pruning.encoder.run import count_parameters
    from lmshrink.quantize import apply
    from lmshrink.quantize.size_latency import memory_bytes

    model = load_causal_lm(str(model_dir)).eval()
    result = {"params": count_parameters(model)}
    if scheme is not None:
        apply(model, scheme)  # as the audit quantizes it (lm_head in float)
    result["size_mb"] = memory_bytes(model) / 2**20
    return result
