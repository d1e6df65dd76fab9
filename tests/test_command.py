"""``lmshrink``, the one command: its subcommands, and the shipped configs found by name from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmshrink.cli import main as cli_main
from lmshrink.command import SUBCOMMANDS, main
from lmshrink.shipped_configs import configs_root, list_configs, resolve_config
from tests.helpers import REPO


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {name} " in text for name in SUBCOMMANDS)
    assert main(["fitt"]) == 2 and "unknown subcommand 'fitt'" in capsys.readouterr().err


def test_shipped_configs_are_the_repository_configs_by_name(tmp_path, monkeypatch):
    shipped = sorted(str(p.relative_to(REPO / "configs").with_suffix("")) for p in (REPO / "configs").rglob("*.yaml"))
    assert list_configs() == shipped and "teacher/stereoset_minilm" in shipped
    # the wheel takes configs/*/*.yaml (pyproject's package-data): every shipped config lies at that depth
    assert sorted((REPO / "configs").glob("*/*.yaml")) == sorted((REPO / "configs").rglob("*.yaml"))
    monkeypatch.chdir(tmp_path)  # from any directory
    expected = (configs_root() / "teacher" / "stereoset_minilm.yaml").resolve()
    for name in ("teacher/stereoset_minilm", "teacher/stereoset_minilm.yaml", "configs/teacher/stereoset_minilm.yaml"):
        assert Path(resolve_config(name)).resolve() == expected == (REPO / "configs/teacher/stereoset_minilm.yaml").resolve()
    mine = tmp_path / "teacher" / "stereoset_minilm.yaml"  # a user's own file of the same name wins
    mine.parent.mkdir()
    mine.write_text("seed_everything: 1\n")
    assert resolve_config("teacher/stereoset_minilm.yaml") == "teacher/stereoset_minilm.yaml"


def test_configs_cp_copies_once_and_refuses_what_is_not_shipped(tmp_path, capsys):
    assert main(["configs", "cp", "teacher/stereoset_minilm", f"{tmp_path}/mine/"]) == 0
    copied = tmp_path / "mine" / "stereoset_minilm.yaml"
    assert copied.read_text() == (REPO / "configs/teacher/stereoset_minilm.yaml").read_text()
    copied.write_text("edited\n")
    assert main(["configs", "cp", "teacher/stereoset_minilm", str(copied)]) == 2
    assert copied.read_text() == "edited\n"  # never overwritten
    assert main(["configs", "cp", "teacher/nope", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: configs cp: {copied} exists; nothing was overwritten",
                   "error: configs cp: 'teacher/nope' is not a shipped config; `lmshrink configs` lists them"]


def test_an_unknown_config_name_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", "teacher/stereoset_minilmm"], exit_on_error=True)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == ("error: --config teacher/stereoset_minilmm: no such file, nor a "
                                                       "shipped config (`lmshrink configs` lists them)")


@pytest.mark.slow
def test_lmshrink_fit_by_config_name_from_an_empty_directory(tiny_bert_dir, tmp_path):
    """The quick start's command through the console entry (``python -m lmshrink`` runs the same ``main``), from a
    directory with no ``configs/`` in it, on the tiny model."""
    args = ["fit", "--config", "teacher/stereoset_minilm", f"--model.model_path={tiny_bert_dir}",
            f"--data.tokenizer_path={tiny_bert_dir}", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=.", "--trainer.default_root_dir=runs/quick"]
    proc = subprocess.run([sys.executable, "-m", "lmshrink", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs/quick/model/model.safetensors").is_file()
    assert not (tmp_path / "configs").exists()
