"""Resuming a run: the checkpoint ``--ckpt_path`` names, and which hyperparameters a resume may change."""

from __future__ import annotations

from pathlib import Path

from lmshrink.errors import MissingInputError

CKPT_KEYWORDS = ("last", "best", "hpc", "registry")
"""``--ckpt_path`` values Lightning resolves itself; ``none`` says "evaluate the model as configured"."""


def given_ckpt_path(value) -> str | None:
    """``--ckpt_path`` as given, None when absent or ``none`` (evaluate the model as configured)."""
    return None if value is None or str(value).lower() == "none" else str(value)


def resolve_checkpoint(ckpt_path: str | None, checkpoint_dirs: list[Path]) -> Path | None:
    """The file ``--ckpt_path`` names (``last``: the ``last.ckpt`` of the run's checkpoint directories); None when
    none is given or Lightning resolves the keyword inside the run (``best``, ...). A missing file fails here,
    before any model is loaded or file written."""
    ckpt_path = given_ckpt_path(ckpt_path)
    if ckpt_path is None or ckpt_path in CKPT_KEYWORDS[1:]:
        return None
    if ckpt_path == "last":
        found = [directory / "last.ckpt" for directory in checkpoint_dirs if (directory / "last.ckpt").is_file()]
        if not found:
            where = ", ".join(str(directory) for directory in checkpoint_dirs) or "(no ModelCheckpoint configured)"
            raise MissingInputError(
                f"--ckpt_path last: no last.ckpt in {where}; nothing to resume (is --trainer.default_root_dir the "
                f"directory of the run you want to resume?)")
        return found[0]
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    return path


FREE_ON_RESUME = {"num_workers", "eval_batch_size", "export_dir", "student_save_dir", "save_dir", "teacher_cache_dir"}
"""Hyperparameters a resumed run may change without changing what it trains (speed and output places only)."""


def resume_mismatches(checkpoint: dict, model_hparams: dict, data_hparams: dict) -> dict[str, str]:
    """``{key: "--group.key: <checkpoint value> in the checkpoint, <config value> now"}`` for every hyperparameter
    that differs between the checkpoint being resumed and the config (torchtune's ``_update_recipe_state`` check),
    apart from :data:`FREE_ON_RESUME`."""
    differences = {}
    for group, saved, now in (("model", checkpoint.get("hyper_parameters") or {}, model_hparams),
                              ("data", checkpoint.get("datamodule_hyper_parameters") or {}, data_hparams)):
        for key in sorted(set(saved) | set(now)):
            if key not in FREE_ON_RESUME and not key.startswith("_") and saved.get(key) != now.get(key):
                differences[key] = f"--{group}.{key}: {saved.get(key)!r} in the checkpoint, {now.get(key)!r} now"
    return differences
