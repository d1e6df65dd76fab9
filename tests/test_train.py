"""End-to-end runs of the real CLI and the shipped teacher config, shrunk to CPU size."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lmshrink.cli import main
from lmshrink.datamodules import GroupedTextDataModule
from tests.card_checks import assert_card_reports
from tests.helpers import (
    callbacks_overlay,
    final_weights,
    group_record,
    run_train_py,
    tiny_run_args,
)


@pytest.mark.slow
def test_fit_tiny_bert_writes_group_tables_and_refuses_overwrite(tiny_bert_dir, tmp_path):
    root = tmp_path / "run"
    args = tiny_run_args(tiny_bert_dir, root, train_batches=4)
    main(["fit", *args])
    val, test = group_record(root, "val"), group_record(root, "test")
    assert [g["group"] for g in test["groups"]][:2] == ["stereotype|gender", "stereotype|profession"]
    test_split = GroupedTextDataModule(tokenizer_path=str(tiny_bert_dir))
    test_split.setup("test")
    assert sum(g["n"] for g in test["groups"]) == len(test_split.datasets["test"])  # each example once
    assert 0 <= test["worst_group_acc"] <= test["avg_acc"] <= 1
    present = [g["accuracy"] for g in test["groups"] if g["accuracy"] is not None]
    assert test["worst_group_acc"] == pytest.approx(min(present))
    assert val["global_step"] == 4
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert any(root.rglob("config.yaml"))
    # the exported model carries its card: the tested weights are the exported ones, so the test record is on it
    card = assert_card_reports(root / "model", test)
    assert card.data.base_model is None and "fine-tuning" in card.data.tags  # a local parent is no Hub model
    assert f"lmshrink fit --config {next(root.rglob('config.yaml'))}" in card.text
    card_before = (root / "model" / "README.md").read_text()
    with pytest.raises(FileExistsError, match=r"belongs to an earlier run. Resume it with --ckpt_path last"):
        main(["fit", *args, f"--model.export_dir={tmp_path / 'other_export'}"])
    assert (root / "model" / "README.md").read_text() == card_before  # a refused run touches no card
    # A new run directory whose export would land in the first run's model: refused before anything is written.
    other = tmp_path / "other_run"
    with pytest.raises(FileExistsError, match=r"--model.export_dir=.*run/model' is not empty; nothing was overwritten"):
        main(["fit", *tiny_run_args(tiny_bert_dir, other, train_batches=4), f"--model.export_dir={root / 'model'}"])
    assert not other.exists(), "a refused run must leave nothing behind"


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_dir, tmp_path_factory):
    """Reference run: 12 steps, checkpoint every 4, dropout on (so per-batch seeding matters)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    overlay = callbacks_overlay(root.parent / "uninterrupted_callbacks.yaml", every_n_train_steps=4)
    main(["fit", *tiny_run_args(tiny_bert_dir, root, "--config", str(overlay), train_batches=12)])
    return root


@pytest.mark.parametrize(
    "stopper, resumes_from_step",
    [
        ({"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 6}}, 4),  # kill -9: last periodic ckpt
        ({"class_path": "tests.helpers.InterruptAtStep", "init_args": {"step": 7}}, 7),  # Ctrl-C: saved on exception
    ],
    ids=["kill-9", "ctrl-c"],
)
@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tiny_bert_dir, tmp_path, uninterrupted, stopper, resumes_from_step):
    root = tmp_path / "run"
    killed = callbacks_overlay(tmp_path / "killed.yaml", every_n_train_steps=4, extra=[stopper])
    proc = run_train_py("fit", tiny_run_args(tiny_bert_dir, root, "--config", str(killed), train_batches=12), check=False)
    assert proc.returncode != 0, "the run was meant to die mid-epoch"
    last = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == resumes_from_step

    resume = callbacks_overlay(tmp_path / "resume.yaml", every_n_train_steps=4)
    main(["fit", *tiny_run_args(tiny_bert_dir, root, "--config", str(resume), train_batches=12), "--ckpt_path", "last"])

    expected, got = final_weights(uninterrupted), final_weights(root)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    assert group_record(root, "test") | {"global_step": None} == group_record(uninterrupted, "test") | {"global_step": None}


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_bert_no_dropout_dir, tmp_path):
    args = lambda root: tiny_run_args(tiny_bert_no_dropout_dir, root, "--data.batch_size=16", train_batches=8)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    main(["fit", *args(single), "--trainer.accelerator=cpu"])
    run_train_py("fit", [*args(ddp), "--config", "configs/trainer/ddp_cpu.yaml"])
    for stage in ("val", "test"):
        one, two = group_record(single, stage), group_record(ddp, stage)
        assert sum(g["n"] for g in two["groups"]) == sum(g["n"] for g in one["groups"])  # nothing counted twice
        for a, b in zip(one["groups"], two["groups"]):
            assert a["group"] == b["group"] and a["n"] == b["n"]
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-9)
        for key in ("avg_acc", "worst_group_acc", "group_gap", "macro_f1"):
            assert one[key] == pytest.approx(two[key], abs=1e-9), key
    for key, value in final_weights(single).items():
        torch.testing.assert_close(final_weights(ddp)[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_real_minilm_fit_logs_to_offline_wandb(tmp_path):
    """The shipped config on the real MiniLM for a few steps, with the real offline W&B logger."""
    root = tmp_path / "minilm"
    proc = run_train_py("fit", [
        "--config", "configs/teacher/stereoset_minilm.yaml", f"--trainer.default_root_dir={root}",
        f"--model.export_dir={root / 'model'}",
        "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
        "--trainer.val_check_interval=1.0", "--trainer.enable_progress_bar=false",
    ])
    assert "Per-group test accuracy" in proc.stdout + proc.stderr
    record = group_record(root, "test")
    assert len(record["groups"]) == 12 and not math.isnan(record["avg_acc"])
    assert (root / "config.yaml").is_file()
    exported = AutoModelForSequenceClassification.from_pretrained(root / "model", local_files_only=True)
    assert exported.config.num_labels == 3 and (root / "model" / "tokenizer.json").is_file()
    run_dirs = list((root / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1, "the W&B run must be offline by default"
    assert list(run_dirs[0].glob("run-*.wandb"))
    assert list(run_dirs[0].rglob("*group_table*.table.json")), "the per-group wandb.Table was not logged"


@pytest.mark.slow
def test_resume_after_kill_continues_the_same_wandb_run(tiny_bert_dir, tmp_path):
    """kill -9, then --ckpt_path last: one W&B run id (kept in the run directory) whose steps continue after the
    checkpoint; the resumed config is config.fit-1.yaml; save_top_k=1 leaves one best checkpoint."""
    from tests.helpers import wandb_history

    root = tmp_path / "run"
    base = ["--config", "configs/teacher/stereoset_minilm.yaml", f"--model.model_path={tiny_bert_dir}",
            f"--data.tokenizer_path={tiny_bert_dir}", f"--trainer.default_root_dir={root}",
            "--trainer.limit_train_batches=12", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1", "--trainer.log_every_n_steps=1"]
    killed = callbacks_overlay(tmp_path / "killed.yaml", every_n_train_steps=4,
                               extra=[{"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 6}}])
    assert run_train_py("fit", [*base, "--config", str(killed)], check=False).returncode != 0
    run_id = (root / "wandb_run_id").read_text().strip()
    run_train_py("fit", [*base, "--config", str(callbacks_overlay(tmp_path / "resume.yaml", 4)), "--ckpt_path", "last"])

    run_dirs = sorted((root / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2 and all(d.name.endswith(f"-{run_id}") for d in run_dirs), run_dirs
    resumed_id, rows = wandb_history(run_dirs[-1])
    assert resumed_id == run_id
    steps = sorted({row["trainer/global_step"] for row in rows if "train/loss" in row})
    assert steps == list(range(4, 12)), steps  # continues after the step-4 checkpoint, not from 0
    assert (root / "config.yaml").is_file() and (root / "config.fit-1.yaml").is_file()
    assert len(list((root / "checkpoints").glob("best-*.ckpt"))) == 1


@pytest.mark.slow
def test_hub_model_id_loads_from_the_cache_offline(tiny_bert_dir, tmp_path):
    """A hub id resolves through huggingface_hub's cache (layout built here from the tiny model): offline it is
    used from the cache, as `hf download` would have left it."""
    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--lmshrink-test--tiny-bert"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in tiny_bert_dir.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    root = tmp_path / "run"
    args = [arg for arg in tiny_run_args(tiny_bert_dir, root, train_batches=2)
            if not arg.startswith(("--model.model_path", "--data.tokenizer_path"))]
    run_train_py("fit", [*args, "--model.model_path=lmshrink-test/tiny-bert", "--data.tokenizer_path=lmshrink-test/tiny-bert"],
                 env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    assert (root / "model" / "model.safetensors").is_file()
    # an uncached id fails at once naming it: tests/test_user_mistakes.py (hub-id-offline), tests/test_backbones.py


def test_exported_model_carries_the_class_names(tiny_bert_dir, tmp_path):
    root = tmp_path / "run"
    main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2)])
    exported = AutoModelForSequenceClassification.from_pretrained(root / "model", local_files_only=True)
    assert exported.config.id2label == {0: "stereotype", 1: "anti-stereotype", 2: "unrelated"}


@pytest.mark.slow
def test_fit_without_a_logger_leaves_the_learning_rate_monitor_out(tiny_bert_dir, tmp_path, capsys):
    """``--trainer.logger false`` is a user's choice; the shipped config's LearningRateMonitor made it a traceback
    ("Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger")."""
    root = tmp_path / "run"
    main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2), "--trainer.logger=false"])
    assert "LearningRateMonitor left out" in capsys.readouterr().out
    assert (root / "model" / "model.safetensors").is_file()


def test_only_a_logger_turned_off_drops_the_learning_rate_monitor():
    """``logger: null`` (or no logger key) is Lightning's default logger, which the monitor logs to: it stays."""
    from jsonargparse import Namespace

    from lmshrink.cli.run_dirs import drop_logger_callbacks_without_a_logger

    for logger, kept in ((None, 1), (False, 0), ([], 0)):
        monitor = Namespace(class_path="lightning.pytorch.callbacks.LearningRateMonitor")
        config = Namespace(trainer=Namespace(logger=logger, callbacks=[monitor]))
        drop_logger_callbacks_without_a_logger(config)
        assert len(config.trainer.callbacks) == kept, logger


@pytest.mark.slow
def test_ckpt_path_none_evaluates_an_untrained_head_on_purpose(tmp_path):
    root = tmp_path / "eval"
    main(["test", "--config", "configs/teacher/stereoset_minilm.yaml", f"--trainer.default_root_dir={root}",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
          "--trainer.limit_test_batches=1", "--ckpt_path=none"])
    assert group_record(root, "test")["groups"]
