"""Every shipped config parses as the command line would parse it, with each overlay it is meant for, so that
none can rot unnoticed; the teacher config with the debug overlay also instantiates and runs on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmshrink.cli import check_args, main
from lmshrink.study.spec import load_spec
from lmshrink.study.validate import check_study
from tests.helpers import REPO

CONFIGS = REPO / "configs"
EXPERIMENTS = {  # experiment config -> the subcommand it is run with
    "teacher/stereoset_minilm.yaml": "fit",
    "distill/stereoset_minilm_to_3layer.yaml": "fit",
    "distill/smollm2_half.yaml": "fit",
    "prune/kprune_stereoset.yaml": "validate",
    "generative/toxicity_smollm2.yaml": "test",
}
OVERLAYS = {  # overlay -> the experiment it is combined with
    "debug/fast_dev_run.yaml": "teacher/stereoset_minilm.yaml",
    "trainer/ddp_cpu.yaml": "teacher/stereoset_minilm.yaml",
    **{f"data/{path.name}": "teacher/stereoset_minilm.yaml" for path in (CONFIGS / "data").glob("*.yaml")},
}


def test_every_shipped_config_is_covered_here():
    shipped = {str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.yaml")}
    studies = {str(path.relative_to(CONFIGS)) for path in (CONFIGS / "study").glob("*.yaml")}
    assert shipped == set(EXPERIMENTS) | set(OVERLAYS) | studies


@pytest.mark.parametrize("config", sorted(EXPERIMENTS))
def test_experiment_config_parses(config):
    check_args(EXPERIMENTS[config], ["--config", str(CONFIGS / config)])


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_parses_with_its_experiment(overlay):
    base = OVERLAYS[overlay]
    check_args(EXPERIMENTS[base], ["--config", str(CONFIGS / base), "--config", str(CONFIGS / overlay)])


@pytest.mark.parametrize("study", sorted(path.name for path in (CONFIGS / "study").glob("*.yaml")))
def test_study_config_passes_the_study_checks(study, monkeypatch):
    monkeypatch.chdir(REPO)
    check_study(load_spec(Path("configs/study") / study))


def test_teacher_config_with_the_debug_overlay_runs_on_a_tiny_model(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the overlay writes to runs/debug
    args = ["fit", "--config", str(CONFIGS / "teacher/stereoset_minilm.yaml"), "--config",
            str(CONFIGS / "debug/fast_dev_run.yaml"), f"--model.model_path={tiny_bert_dir}",
            f"--data.tokenizer_path={tiny_bert_dir}"]
    main(args)
    main(args)  # a debug check is re-run after every edit: nothing it leaves may block it
    assert not (tmp_path / "runs" / "debug" / "model").exists(), "a debug run exports no model"
