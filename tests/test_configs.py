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
    "generative/study_smollm2.yaml": "test",
    "teacher/conll_minilm.yaml": "fit",
    "distill/conll_minilm_to_3layer.yaml": "fit",
    "prune/kprune_conll.yaml": "validate",
}
OVERLAYS = {  # overlay -> the experiment it is combined with
    "debug/fast_dev_run.yaml": "teacher/stereoset_minilm.yaml",
    "trainer/ddp_cpu.yaml": "teacher/stereoset_minilm.yaml",
    **{f"data/{path.name}": "teacher/stereoset_minilm.yaml" for path in (CONFIGS / "data").glob("*.yaml")},
    "data/masakhaner.yaml": "teacher/conll_minilm.yaml",  # token classification
}


PIECES = ("logger", "callbacks")  # shared pieces that experiment configs name by path (one concern each)


def test_every_shipped_config_is_covered_here():
    shipped = {str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.yaml")}
    studies = {str(path.relative_to(CONFIGS)) for path in (CONFIGS / "study").glob("*.yaml")}
    pieces = {str(path.relative_to(CONFIGS)) for piece in PIECES for path in (CONFIGS / piece).glob("*.yaml")}
    assert shipped == set(EXPERIMENTS) | set(OVERLAYS) | studies | pieces


@pytest.mark.parametrize("piece", sorted(str(p.relative_to(CONFIGS)) for d in PIECES for p in (CONFIGS / d).glob("*.yaml")))
def test_every_shared_piece_is_used_by_an_experiment(piece):
    users = [config for config in EXPERIMENTS if f"../{piece}" in (CONFIGS / config).read_text()]
    assert users, f"configs/{piece} is named by no experiment config"


@pytest.mark.parametrize("config", sorted(EXPERIMENTS))
def test_experiment_config_parses(config):
    check_args(EXPERIMENTS[config], ["--config", str(CONFIGS / config)])


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_parses_with_its_experiment(overlay):
    base = OVERLAYS[overlay]
    check_args(EXPERIMENTS[base], ["--config", str(CONFIGS / base), "--config", str(CONFIGS / overlay)])


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(path.name for path in (CONFIGS / "study").glob("*.yaml")))
def test_study_config_passes_the_study_checks(study, monkeypatch):
    monkeypatch.chdir(REPO)
    check_study(load_spec(Path("configs/study") / study))


TINY = {  # experiment -> (tiny model fixture, arguments that point it at that model and shrink its work)
    "teacher/stereoset_minilm.yaml": ("tiny_bert_dir", ["--model.model_path={m}", "--data.tokenizer_path={m}"]),
    "distill/stereoset_minilm_to_3layer.yaml": ("tiny_bert_dir", [
        "--model.teacher_path={m}", "--data.tokenizer_path={m}", "--model.student.num_layers=1"]),
    "distill/smollm2_half.yaml": ("tiny_llama_dir", [
        "--model.teacher_path={m}", "--data.tokenizer_path={m}", "--model.student.num_layers=1"]),
    "prune/kprune_stereoset.yaml": ("tiny_bert_dir", [
        "--model.teacher_path={m}", "--data.tokenizer_path={m}", "--model.method.num_tokens=2000"]),
    "generative/toxicity_smollm2.yaml": ("tiny_llama_dir", [
        "--model.model_path={m}", "--model.max_new_tokens=2", "--model.num_samples=1", "--data.num_toxicity_prompts=2",
        "--data.names_per_group=1", "--data.num_crows_pairs=2", "--data.num_stereoset_pairs=2",
        "--data.num_heldout_texts=2", "--model.heldout_window=64"]),  # the tiny Llama's context is 256 tokens
    "generative/study_smollm2.yaml": ("tiny_llama_dir", [
        "--model.model_path={m}", "--model.max_new_tokens=2", "--model.num_samples=1", "--data.num_toxicity_prompts=2",
        "--data.names_per_group=1", "--data.num_crows_pairs=2", "--data.num_stereoset_pairs=2",
        "--model.heldout_window=16"]),
    "teacher/conll_minilm.yaml": ("tiny_bert_dir", ["--model.model_path={m}", "--data.tokenizer_path={m}"]),
    "distill/conll_minilm_to_3layer.yaml": ("tiny_tagger_dir", [
        "--model.teacher_path={m}", "--data.tokenizer_path={m}", "--model.student.num_layers=1"]),
    "prune/kprune_conll.yaml": ("tiny_tagger_dir", [
        "--model.teacher_path={m}", "--data.tokenizer_path={m}", "--model.method.num_tokens=2000"]),
}


def test_every_experiment_has_a_tiny_run():
    assert set(TINY) == set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(TINY))
def test_experiment_config_with_the_debug_overlay_runs_on_a_tiny_model(config, request, tmp_path, monkeypatch):
    """Every class each experiment names is instantiated with its shipped options, and one batch runs."""
    monkeypatch.chdir(tmp_path)  # the overlay writes to runs/debug
    fixture, overrides = TINY[config]
    model_dir = request.getfixturevalue(fixture)
    args = [EXPERIMENTS[config], "--config", str(CONFIGS / config), "--config", str(CONFIGS / "debug/fast_dev_run.yaml"),
            *(arg.format(m=model_dir) for arg in overrides)]
    main(args)
    if config.startswith("teacher"):
        main(args)  # a debug check is re-run after every edit: nothing it leaves may block it
        assert not (tmp_path / "runs" / "debug" / "model").exists(), "a debug run exports no model"
