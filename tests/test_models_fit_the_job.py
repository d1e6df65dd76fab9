"""Principle 1 of issue 28, command by command: a model that does not fit the job (another kind, a head of another
size or other classes, a context shorter than asked for) is refused by every command before any work, in one
``error:`` line naming the option the user typed. The worst case first: the gate can no longer pass a candidate
whose head would have been re-initialised (it printed "gate passed" before)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForTokenClassification

from lmshrink.cli import main
from lmshrink.errors import run_command
from tests.conftest import save_tiny_bert
from tests.helpers import REPO

MAX_SECONDS = 60
TEACHER = REPO / "configs/teacher/stereoset_minilm.yaml"
AUDIT = REPO / "configs/generative/toxicity_smollm2.yaml"
PRUNE = REPO / "configs/prune/kprune_stereoset.yaml"
DISTILL = REPO / "configs/distill/stereoset_minilm_to_3layer.yaml"
NER = REPO / "configs/teacher/conll_minilm.yaml"
NER_PRUNE = REPO / "configs/prune/kprune_conll.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_bert_varied_dir, tiny_llama_dir, tiny_tagger_dir) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("misfits")
    renamed = directory / "sentiment_names"  # 3 classes, as the data, but trained on other ones
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_varied_dir)
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {name: index for index, name in model.config.id2label.items()}
    model.save_pretrained(renamed)
    AutoTokenizer.from_pretrained(tiny_bert_varied_dir).save_pretrained(renamed)
    return {"good": tiny_bert_varied_dir, "llama": tiny_llama_dir, "renamed": renamed, "conll_tagger": tiny_tagger_dir,
            "two_class": save_tiny_bert(directory / "two_class", num_labels=2, initializer_range=0.5),
            "tagger": save_tiny_bert(directory / "tagger", num_labels=3, model_class=BertForTokenClassification)}


def one_error_line(err: str, pattern: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(pattern, errors[0]), f"{pattern!r} not in {errors[0]!r}"


def gate(models, tmp_path, reference: str, candidate: str, *data: str) -> int:
    from lmshrink.gate import cli

    return cli(["--reference", str(models[reference]), "--candidate", str(models[candidate]), "--config", str(TEACHER),
                "--output-dir", str(tmp_path / "gate"), "--", f"--data.tokenizer_path={models['good']}",
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
                "--trainer.enable_progress_bar=false", *data])


GATE_CASES = [
    ("two-class-candidate", "good", "two_class", [],
     r"^error: --candidate='.*two_class' has a 2-class head but the data has 3 classes"),
    ("causal-lm-reference", "llama", "good", [], r"^error: --reference='.*' is not a sequence classifier \(LlamaForCausalLM\)"),
    ("tagger-candidate", "good", "tagger", [], r"^error: --candidate is a token classifier but --reference is a sequence classifier"),
    ("other-classes", "good", "renamed", [],
     r"^error: --candidate='.*sentiment_names' predicts the classes \['negative', 'neutral', 'positive'\] but the "
     r"data's classes are \['stereotype', 'anti-stereotype', 'unrelated'\]"),
    ("data-longer-than-context", "good", "good", ["--data.max_length=256"],
     r"^error: --data.max_length=256 is longer than the context of --candidate='.*' \(128 tokens\)"),
]


@pytest.mark.parametrize("name, reference, candidate, data, pattern", GATE_CASES, ids=[c[0] for c in GATE_CASES])
def test_the_gate_refuses_a_model_that_does_not_fit(name, reference, candidate, data, pattern, models, tmp_path,
                                                    capsys):
    start = time.perf_counter()
    assert gate(models, tmp_path, reference, candidate, *data) == 2
    one_error_line(capsys.readouterr().err, pattern)
    assert time.perf_counter() - start < MAX_SECONDS
    assert not list(tmp_path.rglob("group_metrics_test*.json")), "the gate evaluated before refusing"


def train_py_args(config: Path, root: Path, tokenizer: Path, *extra: str) -> list[str]:
    data = [] if config == AUDIT else [f"--data.tokenizer_path={tokenizer}"]  # the audit reads the model's own
    return ["--config", str(config), *data, f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.enable_progress_bar=false", *extra]


# (id, subcommand, config, arguments, pattern); {NAME} is a model of the fixture
TRAIN_PY_CASES = [
    ("audit-of-an-encoder", "test", AUDIT, ["--model.model_path={good}"],
     r"--model.model_path='.*' is not a causal LM \(BertForSequenceClassification\)"),
    ("audit-student-encoder", "test", AUDIT, ["--model.model_path={llama}", "--model.students={{s: {good}}}",
                                              "--model.heldout_window=64"],
     r"--model.students.s='.*' is not a causal LM"),
    ("audit-window-past-context", "test", AUDIT, ["--model.model_path={llama}", "--model.heldout_window=512"],
     r"--model.heldout_window=512 is longer than the context of --model.model_path='.*' \(256 tokens\)"),
    ("prune-two-class-teacher", "validate", PRUNE, ["--model.teacher_path={two_class}"],
     r"teacher_path='.*two_class' has a 2-class head but the data has 3 classes"),
    ("prune-other-classes", "validate", PRUNE, ["--model.teacher_path={renamed}"],
     r"teacher_path='.*sentiment_names' predicts the classes"),
    ("distill-two-class-teacher", "fit", DISTILL, ["--model.teacher_path={two_class}", "--model.student.num_layers=1"],
     r"teacher_path='.*two_class' has a 2-class head but the data has 3 classes"),
    ("distill-student-causal-lm", "fit", DISTILL, ["--model.teacher_path={good}", "--model.student={{path: {llama}, num_layers: null}}"],
     r"--model.student.path='.*' is a causal LM \(LlamaForCausalLM\); lmshrink fine-tunes and distils encoder"),
    ("compare-two-class", "test", TEACHER, ["--model=lmshrink.modules.Compare", "--model.model_path={two_class}",
                                            "--model.reference_path={good}"],
     r"model_path='.*two_class' has a 2-class head but the data has 3 classes"),
    ("ner-compare-three-tag-tagger", "test", NER, ["--model=lmshrink.modules.Compare", "--model.model_path={tagger}",
                                                   "--model.reference_path={conll_tagger}"],
     r"model_path='.*tagger' has a 3-class head but the data has 9 classes"),
    ("ner-prune-a-sequence-classifier", "validate", NER_PRUNE, ["--model.teacher_path={good}"],
     r"teacher_path='.*' has a 3-class head but the data has 9 classes"),
    ("ner-evaluate-a-causal-lm", "test", NER, ["--model=lmshrink.modules.Compare", "--model.model_path={llama}",
                                               "--model.reference_path={conll_tagger}"],
     r"model_path='.*' is not a token classifier|is not a sequence classifier \(LlamaForCausalLM\)"),
    ("quantize-an-audit", "test", AUDIT, ["--model.model_path={llama}", "--model.heldout_window=64",
                                          "--trainer.callbacks+=lmshrink.callbacks.Quantize"],
     r"Quantize measures classifiers per group; GenerativeAudit works on a causal LM"),
    ("fine-tune-a-causal-lm", "fit", TEACHER, ["--model.model_path={llama}"],
     r"model_path='.*' is a causal LM \(LlamaForCausalLM\); lmshrink fine-tunes"),
]


@pytest.mark.parametrize("name, subcommand, config, extra, pattern", TRAIN_PY_CASES, ids=[c[0] for c in TRAIN_PY_CASES])
def test_train_py_modules_refuse_a_model_that_does_not_fit(name, subcommand, config, extra, pattern, models,
                                                           tmp_path, capsys):
    extra = [value.format(**{key: str(path) for key, path in models.items()}) for value in extra]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *train_py_args(config, tmp_path / "run", models["good"], *extra)], exit_on_error=True)
    assert exit_info.value.code == 2
    one_error_line(capsys.readouterr().err, pattern)
    assert time.perf_counter() - start < MAX_SECONDS


PRUNE_GENERATOR_CASES = [
    ("encoder", ["--model", "{good}", "--method", "wanda-0.5"], r"^error: --model='.*' is not a causal LM"),
    ("seq-len-past-context", ["--model", "{llama}", "--method", "wanda-0.5", "--seq-len", "300"],
     r"^error: --seq-len=300 is longer than the context of --model='.*' \(256 tokens\); set --seq-len <= 256"),
    ("heldout-window-past-context", ["--model", "{llama}", "--method", "magnitude-0.5"],
     r"^error: --heldout-window=512 is longer than the context"),
]


@pytest.mark.parametrize("name, argv, pattern", PRUNE_GENERATOR_CASES, ids=[c[0] for c in PRUNE_GENERATOR_CASES])
def test_prune_generator_refuses_a_model_that_does_not_fit(name, argv, pattern, models, tmp_path, capsys):
    from lmshrink.prune_generator import main as prune_main

    argv = [value.format(**{key: str(path) for key, path in models.items()}) for value in argv]
    assert run_command(prune_main, [*argv, "--save-dir", str(tmp_path / "out")]) == 2
    one_error_line(capsys.readouterr().err, pattern)
    assert not (tmp_path / "out").exists()


def test_the_gate_still_passes_a_fitting_identical_model(models, tmp_path, capsys):
    """The refusals above are not a gate that refuses everything: the reference against itself passes."""
    assert gate(models, tmp_path, "good", "good", "--data.eval_batch_size=256") == 0
    assert "gate passed" in capsys.readouterr().out
    verdict = json.loads(next(tmp_path.rglob("gate.json")).read_text())
    assert verdict["passed"]



def test_the_gate_refuses_an_output_dir_that_is_a_file(models, tmp_path, capsys):
    from lmshrink.gate import cli

    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cli(["--reference", str(models["good"]), "--candidate", str(models["good"]), "--config", str(TEACHER),
                "--output-dir", str(notes)]) == 2
    one_error_line(capsys.readouterr().err, r"^error: --output-dir='.*notes.txt' is a file, not a directory")
    assert notes.read_text() == "mine"
