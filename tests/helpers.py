"""Test helpers: run the real CLI in-process or as a subprocess, and a callback that kills its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]
TEACHER_CONFIG = REPO / "configs" / "teacher" / "stereoset_minilm.yaml"
DISTILL_CONFIG = REPO / "configs" / "distill" / "stereoset_minilm_to_3layer.yaml"


def tiny_run_args(model_dir: Path, root: Path, *extra: str, train_batches: int = 6, distill: bool = False) -> list[str]:
    """A shipped config (teacher, or distillation with ``distill``), shrunk: tiny model, few batches, CSV
    logger (W&B is tested separately)."""
    model_args = ([f"--model.teacher_path={model_dir}", "--model.student.num_layers=1",
                   f"--model.student_save_dir={root / 'student'}"] if distill else
                  [f"--model.model_path={model_dir}", f"--model.export_dir={root / 'model'}"])
    return [
        "--config", str(DISTILL_CONFIG if distill else TEACHER_CONFIG),
        *model_args,
        f"--data.tokenizer_path={model_dir}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir=.",
        f"--trainer.limit_train_batches={train_batches}",
        "--trainer.val_check_interval=1.0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.eval_batch_size=256",
        *extra,
    ]


def run_train_py(subcommand: str, args: list[str], check: bool = True, timeout: int = 300,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), subcommand, *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {subcommand} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_python_here(argv: list[str], log: Path) -> None:
    """Stand-in for :func:`lmshrink.study.runner.run_python` (monkeypatch it): the study's ``train.py ...`` and
    ``-m lmshrink.prune_generator ...`` run in this process, seconds instead of a Python start each. The real
    subprocess path stays covered by the study test that kills a running study."""
    from lmshrink.cli import main as cli_main
    from lmshrink.prune_generator import main as prune_main

    if argv[0] == "-m":
        assert prune_main(argv[2:]) == 0
    else:
        cli_main(argv[1:])


def group_record(root: Path, stage: str) -> dict:
    """The newest ``group_metrics_<stage>.json`` under a run directory."""
    paths = sorted(root.rglob(f"group_metrics_{stage}*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert paths, f"no group_metrics_{stage}.json under {root}"
    return json.loads(paths[-1].read_text())


class KillAtStep(Callback):
    """SIGKILL this process (no cleanup, like ``kill -9``) once ``global_step`` reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptAtStep(Callback):
    """Raise KeyboardInterrupt (what Ctrl-C does) at the start of the batch after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


def callbacks_overlay(path: Path, every_n_train_steps: int, extra: list[dict] | None = None,
                      monitor: str = "val/worst_group_acc") -> Path:
    """A config overlay with the shipped callbacks, checkpointing every ``every_n_train_steps``."""
    import yaml

    callbacks = [
        {"class_path": "lmshrink.callbacks.GroupMetrics"},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"every_n_train_steps": every_n_train_steps, "save_last": True, "save_top_k": 0,
                       "save_on_exception": True}},
        {"class_path": "lmshrink.callbacks.ResumableModelCheckpoint",
         "init_args": {"monitor": monitor, "mode": "max", "save_top_k": 1, "filename": "best-{step}"}},
        *(extra or []),
    ]
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def final_weights(root: Path) -> dict:
    import torch

    state = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return state["state_dict"]


def wandb_records(run_file: Path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``), read without the network or wandb's service.

    The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks,
    each ``crc32 (4) | length (2, little-endian) | type (1) | data``; type 1 is a whole record, 2/3/4 the first,
    middle and last piece of one split across blocks. Each record is a ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = run_file.read_bytes(), 32768, [], b""
    position = 7
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # the rest of a block too short for a chunk header is zero padding
            position += room
            continue
        length = int.from_bytes(data[position + 4:position + 6], "little")
        kind = data[position + 6]
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(run_dir: Path) -> tuple[str, list[dict]]:
    """(run id, history rows as {key: value}) of one offline run directory."""
    (run_file,) = run_dir.glob("run-*.wandb")
    records = wandb_records(run_file)
    run_id = next(record.run.run_id for record in records if record.WhichOneof("record_type") == "run")
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return run_id, rows
