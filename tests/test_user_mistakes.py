"""User mistakes: each fails before any training, within seconds, with one ``error:`` line naming the option,
file, line or row at fault (no traceback), exit code 2, and leaves the run directory re-runnable.

The CLI runs in-process with ``exit_on_error=True``: exactly what ``python train.py`` does with its arguments.
``test_a_mistake_on_the_real_command_line`` checks the same contract through a real ``train.py`` process.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from lmshrink.cli import wandb_runs
from lmshrink.cli.wandb_runs import start_wandb_run
from lmshrink.cli import main
from lmshrink.errors import run_command
from tests.helpers import REPO, run_train_py, tiny_run_args

MAX_SECONDS = 60  # generous for a loaded CI machine; the point is "before any training", not a benchmark


def assert_rerunnable(root: Path) -> None:
    """Nothing that would make the same command refuse to run again: no config, checkpoint or W&B run."""
    if not root.exists():
        return
    blocking = [p for p in root.rglob("*") if p.name.startswith("config") or p.suffix == ".ckpt"
                or p.name in ("wandb", "wandb_run_id")]
    assert not blocking, f"a failed start left {blocking}"


def fails_cleanly(capsys, args: list[str], pattern: str, root: Path) -> str:
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(args, exit_on_error=True)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    after = err.split(errors[0], 1)[1].strip().splitlines()
    assert len(after) <= 1, f"more than a line after the error: {after}"  # at most a hint
    assert "Traceback" not in err
    assert re.search(pattern, errors[0]), f"{pattern!r} not in {errors[0]!r}"
    assert seconds < MAX_SECONDS
    assert_rerunnable(root)
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad_files")
    good = "text,label,dialect\n" + "".join(f"sentence {i},{i % 2},{'a' if i % 3 else 'b'}\n" for i in range(40))
    made = {
        "header_only": "text,label,dialect\n",
        "zero_bytes": "",
        "extra_fields": "text,label,dialect\nfine,0,a\nalso fine,1,b\ntoo, many,1,a\n",
        "label_5": good.replace("sentence 3,1,b", "sentence 3,5,b"),
        "good": good,
    }
    paths = {}
    for name, text in made.items():
        paths[name] = directory / f"{name}.csv"
        paths[name].write_text(text)
    paths["latin1"] = directory / "latin1.csv"
    paths["latin1"].write_bytes(b"text,label,dialect\nfine,0,a\ncaf\xe9,1,b\n")
    paths["json_array"] = directory / "array.json"
    paths["json_array"].write_text('["sentence one", "sentence two"]')
    paths["bad_jsonl"] = directory / "bad.jsonl"
    paths["bad_jsonl"].write_text('{"text": "a", "label": 0, "dialect": "a"}\n{"text": "b", "label": 1, dialect: b}\n')
    return paths


@pytest.fixture(scope="module")
def broken_models(tiny_bert_dir, tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("broken_models")
    truncated = directory / "truncated"
    truncated.mkdir()
    for file in tiny_bert_dir.iterdir():
        (truncated / file.name).write_bytes(file.read_bytes())
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    no_weights = directory / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    corrupt = directory / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    made = {"truncated": truncated, "no_weights": no_weights, "corrupt_ckpt": corrupt}
    # checkpoints that load but do not fit a sequence-classification run of the tiny BERT
    from transformers import BertForSequenceClassification

    weights = {f"model.{key}": value for key, value in
               BertForSequenceClassification.from_pretrained(tiny_bert_dir).state_dict().items()}
    foreign = {"plain_dict": {"weights": torch.zeros(2)},
               "tagger_ckpt": {"state_dict": weights, "hyper_parameters": {
                   "task": "token", "_class_path": "lmshrink.modules.TeacherFineTune"}},
               "distill_ckpt": {"state_dict": weights, "hyper_parameters": {
                   "_class_path": "lmshrink.modules.Distillation", "teacher_path": "x"}},
               "nine_class_ckpt": {"state_dict": weights | {"model.classifier.weight": torch.zeros(9, 32),
                                                            "model.classifier.bias": torch.zeros(9)}},
               "other_module_ckpt": {"state_dict": weights | {"objective.projection.weight": torch.zeros(4, 4)}}}
    for name, content in foreign.items():
        torch.save(content, directory / f"{name}.ckpt")
        made[name] = directory / f"{name}.ckpt"
    full = directory / "full.ckpt"
    torch.save({"state_dict": weights, "hyper_parameters": {"task": "sequence"}}, full)
    truncated_ckpt = directory / "truncated.ckpt"
    truncated_ckpt.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    made["truncated_ckpt"] = truncated_ckpt
    return made


def user_csv(path: Path) -> list[str]:
    return [f"--data.dataset={path}", "--data.num_labels=2", "--data.group_columns=[dialect]"]


# (id, subcommand, extra arguments, pattern of the error line); {file:NAME}, {model:NAME}, {tmp} are filled in.
MISTAKES = [
    ("batch-size-0", "fit", ["--data.batch_size=0"], r"--data.batch_size=0 must be >= 1"),
    ("batch-size-negative", "fit", ["--data.batch_size=-4"], r"--data.batch_size=-4 must be >= 1"),
    ("eval-batch-size-0", "fit", ["--data.eval_batch_size=0"], r"--data.eval_batch_size=0 must be >= 1"),
    ("max-length-0", "fit", ["--data.max_length=0"], r"--data.max_length=0 must be >= 2"),
    ("val-fraction", "fit", ["--data.val_fraction=1.5"], r"--data.val_fraction=1.5 must be in \(0, 1\)"),
    ("fractions-sum", "fit", ["--data.val_fraction=0.6", "--data.test_fraction=0.5"], r"leaves no training rows"),
    ("learning-rate-0", "fit", ["--model.learning_rate=0"], r"--model.learning_rate=0.0 must be > 0"),
    ("warmup-ratio-1", "fit", ["--model.warmup_ratio=1.0"], r"--model.warmup_ratio=1.0 must be in \[0, 1\)"),
    ("column-beside-group-scheme", "fit", ["--data.group_scheme=civilcomments", "--data.num_labels=2",
                                           "--data.text_column=body"],
     r"--data.text_column=body is ignored by --data.group_scheme=civilcomments, which fixes the text"),
    ("lr-beside-injected-optimizer", "fit", ["--model.optimizer=torch.optim.SGD", "--model.learning_rate=0.001"],
     r"--model.learning_rate=0.001 sets the default optimizer, which --model.optimizer replaces; set it in"),
    ("warmup-beside-injected-schedule", "fit", ["--model.lr_scheduler=torch.optim.lr_scheduler.ConstantLR",
                                                "--model.warmup_ratio=0.3"],
     r"--model.warmup_ratio=0.3 sets the default lr_scheduler, which --model.lr_scheduler replaces"),
    ("batch-size-not-int", "fit", ["--data.batch_size=abc"], r"--data.batch_size: Expected a <class 'int'>. Got value: abc"),
    ("unknown-option", "fit", ["--model.learnin_rate=0.1"], r"--model.*Option 'learnin_rate' is not accepted"),
    ("group-scheme", "fit", ["--data.group_scheme=civil"], r"--data.group_scheme: Expected a typing.Literal\['civilcomments'.*; got 'civil'"),
    ("missing-data-file", "fit", ["--data.dataset={tmp}/nope.csv"], r"--data.dataset='.*nope.csv': no such file"),
    ("header-only-csv", "fit", user_csv("{file:header_only}"), r"header_only.csv: the file has a header .* but no rows"),
    ("zero-byte-csv", "fit", user_csv("{file:zero_bytes}"), r"zero_bytes.csv: the file is empty \(0 bytes\)"),
    ("non-utf8-csv", "fit", user_csv("{file:latin1}"), r"latin1.csv: line 3 \(1-based\) is not UTF-8 \(byte 0xe9\)"),
    ("bad-jsonl-line", "fit", user_csv("{file:bad_jsonl}"), r"bad.jsonl: line 2 \(1-based\) is not valid JSON"),
    ("json-array-of-strings", "fit", user_csv("{file:json_array}"), r"array.json: a JSON array of rows must hold objects \(one key per column\); item 0 \(0-based\) is 'sentence one'"),
    ("csv-extra-fields", "fit", user_csv("{file:extra_fields}"), r"extra_fields.csv: line 4 \(1-based\) has 4 fields, the header has 3"),
    ("label-outside", "fit", user_csv("{file:label_5}"), r"column 'label' row 4 \(1-based\) has label 5, outside num_labels=2"),
    ("missing-column", "fit", user_csv("{file:good}") + ["--data.text_column=review"], r"good.csv: no column 'review'; columns are \['dialect', 'label', 'text'\]"),
    ("val-without-test", "fit", user_csv("{file:good}") + ["--data.val_file={file:good}"], r"set both --data.val_file and --data.test_file"),
    ("ignored-dataset-splits", "fit", user_csv("{file:good}") + ["--data.dataset_splits={train: train}"], r"--data.dataset_splits applies to a hub or save_to_disk dataset"),
    ("missing-ckpt", "fit", ["--ckpt_path={tmp}/gone.ckpt"], r"--ckpt_path .*gone.ckpt: no such checkpoint file"),
    ("resume-nothing", "fit", ["--ckpt_path=last"], r"--ckpt_path last: no last.ckpt in .*checkpoints; nothing to resume"),
    ("test-untrained-head", "test", ["--model.model_path=minilm", "--data.tokenizer_path=minilm"], r"test without --ckpt_path would evaluate .*newly initialised classifier head.*--ckpt_path none"),
    ("missing-model-dir", "fit", ["--model.model_path={tmp}/no_model"], r"model_path='.*no_model': no such local directory"),
    ("hub-id-offline", "fit", ["--model.model_path=nobody-here/not-cached-model"], r"model_path='nobody-here/not-cached-model'.* not in the Hugging Face cache .*hf download nobody-here/not-cached-model"),
    ("truncated-safetensors", "fit", ["--model.model_path={model:truncated}"], r"truncated/model.safetensors is truncated"),
    ("no-weights", "fit", ["--model.model_path={model:no_weights}"], r"no_weights'?: no weights in"),
    ("export-dir-not-empty", "fit", ["--model.export_dir={model:no_weights}"], r"--model.export_dir=.*no_weights' is not empty; nothing was overwritten"),
    ("quantize-scheme", "test", ["--ckpt_path=none", "--trainer.callbacks+=lmshrink.callbacks.Quantize", "--trainer.callbacks.scheme=int3"], r"--trainer.callbacks.scheme: Expected a typing.Literal\['bnb-int8'.*Got value: int3$"),
    ("truncated-ckpt", "test", ["--ckpt_path={model:truncated_ckpt}"], r"--ckpt_path='.*truncated.ckpt': not a readable checkpoint"),
    ("not-a-lightning-ckpt", "test", ["--ckpt_path={model:plain_dict}"], r"--ckpt_path .*plain_dict.ckpt: not a Lightning checkpoint \(no state_dict; it holds \['weights'\]\)"),
    ("tagger-ckpt", "test", ["--ckpt_path={model:tagger_ckpt}"], r"--ckpt_path .*tagger_ckpt.ckpt is a checkpoint of a token classification run; this run does sequence classification"),
    ("nine-class-ckpt", "test", ["--ckpt_path={model:nine_class_ckpt}"], r"--ckpt_path .*nine_class_ckpt.ckpt holds weights of another model: 2 differ in shape \(e.g. model.classifier.bias: \[9\] in the file, \[3\] in this run's model\)"),
    ("other-module-ckpt", "fit", ["--ckpt_path={model:other_module_ckpt}"], r"--ckpt_path .*other_module_ckpt.ckpt was written by another kind of run \(0 weights missing, 1 unexpected; the file's objective.projection.weight"),
    ("other-class-ckpt", "test", ["--ckpt_path={model:distill_ckpt}"], r"--ckpt_path .*distill_ckpt.ckpt holds a Distillation checkpoint, but the config runs TeacherFineTune"),
    ("quantize-save-unsaveable", "test", ["--ckpt_path=none", "--trainer.callbacks+=lmshrink.callbacks.Quantize", "--trainer.callbacks.scheme=bnb-nf4", "--trainer.callbacks.save_dir={tmp}/nf4"], r"Quantize: save_dir with scheme bnb-nf4: bitsandbytes 4-bit states do not reload"),
    ("run-dir-is-a-file", "fit", ["--trainer.default_root_dir={file:good}"], r"--trainer.default_root_dir='.*good.csv' is a file, not a directory"),
    ("quantize-skip-typo", "test", ["--ckpt_path=none", "--trainer.callbacks+=lmshrink.callbacks.Quantize", "--trainer.callbacks.scheme=dynamic-int8", "--trainer.callbacks.skip_modules=[clasifier]"], r"Quantize.skip_modules: 'clasifier' matches no module of the model"),
    ("quantize-save-dir-is-a-file", "test", ["--ckpt_path=none", "--trainer.callbacks+=lmshrink.callbacks.Quantize", "--trainer.callbacks.scheme=dynamic-int8", "--trainer.callbacks.save_dir={file:good}"], r"save_dir='.*good.csv' is a file, not a directory"),
    ("bootstrap-for-accuracy", "test", ["--ckpt_path=none", "--trainer.callbacks+=lmshrink.callbacks.GroupMetrics", "--trainer.callbacks.bootstrap_resamples=10"], r"GroupMetrics.bootstrap_resamples resamples sentences for entity F1"),
]


def _fill(values: list[str], tmp: Path, files: dict, models: dict) -> list[str]:
    def one(value: str) -> str:
        value = value.replace("{tmp}", str(tmp))
        value = re.sub(r"\{file:(\w+)\}", lambda m: str(files[m.group(1)]), value)
        return re.sub(r"\{model:(\w+)\}", lambda m: str(models[m.group(1)]), value)
    return [one(value) for value in values]


@pytest.mark.slow
@pytest.mark.parametrize("name, subcommand, extra, pattern", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_gets_one_clean_line(name, subcommand, extra, pattern, tiny_bert_dir, tmp_path, files,
                                     broken_models, capsys):
    root = tmp_path / "run"
    args = [subcommand, *tiny_run_args(tiny_bert_dir, root), *_fill(extra, tmp_path, files, broken_models)]
    fails_cleanly(capsys, args, pattern, root)


MODULE_MISTAKES = [
    ("distill-missing-teacher", "fit", REPO / "configs/distill/stereoset_minilm_to_3layer.yaml",
     ["--model.teacher_path={tmp}/teacher.ckpt", "--model.student.num_layers=1"], r"teacher_path='.*teacher.ckpt': checkpoint does not exist"),
    ("distill-corrupt-teacher", "fit", REPO / "configs/distill/stereoset_minilm_to_3layer.yaml",
     ["--model.teacher_path={model:corrupt_ckpt}", "--model.student.num_layers=1"], r"corrupt.ckpt': not a readable checkpoint"),
    ("distill-temperature", "fit", REPO / "configs/distill/stereoset_minilm_to_3layer.yaml",
     ["--model.teacher_path={tiny}", "--model.student.num_layers=1", "--model.temperature=0"], r"--model.temperature=0.0 must be > 0"),
    ("prune-ratio", "validate", REPO / "configs/prune/kprune_stereoset.yaml",
     ["--model.teacher_path={tiny}", "--model.method.flops_keep_ratio=1.5"], r"KPrune: flops_keep_ratio=1.5 must be in \(0, 1\]"),
    ("prune-method-typo", "validate", REPO / "configs/prune/kprune_stereoset.yaml",
     ["--model.teacher_path={tiny}", "--model.method=KPrun"], r"--model.method: .*KPrun"),
    ("prune-option-of-another-method", "validate", REPO / "configs/prune/kprune_stereoset.yaml",
     ["--model.teacher_path={tiny}", "--model.method=Kwon", "--model.method.num_tokens=500"],
     r"--model.method: 'lmshrink.pruning.methods.Kwon': Option 'num_tokens' is not accepted"),
]


@pytest.mark.parametrize("name, subcommand, config, extra, pattern", MODULE_MISTAKES, ids=[m[0] for m in MODULE_MISTAKES])
def test_module_mistake_gets_one_clean_line(name, subcommand, config, extra, pattern, tiny_bert_dir, tmp_path,
                                            broken_models, capsys):
    root = tmp_path / "run"
    extra = [value.replace("{tiny}", str(tiny_bert_dir)) for value in _fill(extra, tmp_path, {}, broken_models)]
    args = [subcommand, "--config", str(config), f"--data.tokenizer_path={tiny_bert_dir}",
            f"--trainer.default_root_dir={root}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=.", *extra]
    fails_cleanly(capsys, args, pattern, root)


def test_fit_into_a_used_run_directory_is_refused(tiny_bert_dir, tmp_path, capsys):
    root = tmp_path / "run"
    main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2)])
    start = time.perf_counter()
    with pytest.raises(SystemExit):
        main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2)], exit_on_error=True)
    assert time.perf_counter() - start < MAX_SECONDS
    assert re.search(r"error: .* belongs to an earlier run. Resume it with --ckpt_path last", capsys.readouterr().err)


def test_bad_file_with_the_shipped_wandb_logger_leaves_nothing_and_reruns(tiny_bert_dir, tmp_path, files, capsys,
                                                                          monkeypatch):
    """The shipped config (offline W&B logger): a bad file fails before the W&B run starts and leaves no config,
    and the same command with the file fixed then runs in the same directory."""
    root = tmp_path / "run"
    broken = tmp_path / "data.csv"
    broken.write_text(files["extra_fields"].read_text())
    args = ["fit", "--config", str(REPO / "configs/teacher/stereoset_minilm.yaml"), f"--model.model_path={tiny_bert_dir}",
            f"--data.tokenizer_path={tiny_bert_dir}", f"--trainer.default_root_dir={root}",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
            "--trainer.val_check_interval=1.0", *user_csv(broken)]
    started = []
    monkeypatch.setattr(wandb_runs, "start_wandb_run", lambda logger: started.append(logger) or start_wandb_run(logger))
    fails_cleanly(capsys, args, r"data.csv: line 4 \(1-based\) has 4 fields", root)
    assert not started, "the W&B run was started before the data was read"
    broken.write_text(files["good"].read_text())  # the user fixes the file and runs the same command again
    main(args)
    assert len(started) == 1
    assert (root / "config.yaml").is_file() and (root / "model" / "model.safetensors").is_file()
    assert len(list((root / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.slow
def test_a_mistake_on_the_real_command_line(tiny_bert_dir, tmp_path):
    root = tmp_path / "run"
    proc = run_train_py("fit", [*tiny_run_args(tiny_bert_dir, root), "--data.batch_size=0"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: --data.batch_size=0 must be >= 1"
    assert "Traceback" not in proc.stderr + proc.stdout
    noise = ("Failed to load", "_pytree", "git root", "Total Flops", "LeafSpec")
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if any(n in line for n in noise)]
    assert_rerunnable(root)


def test_debug_env_shows_the_traceback(tiny_bert_dir, tmp_path, monkeypatch):
    """LMSHRINK_DEBUG=1: the exception propagates (Python prints its traceback, the mistake in its chain) instead of
    one line."""
    from lmshrink.errors import OptionError, user_error

    monkeypatch.setenv("LMSHRINK_DEBUG", "1")
    with pytest.raises(Exception) as info:
        main(["fit", *tiny_run_args(tiny_bert_dir, tmp_path / "run"), "--data.batch_size=0"], exit_on_error=True)
    assert not isinstance(info.value, SystemExit)
    mistake = user_error(info.value)
    assert isinstance(mistake, OptionError) and str(mistake) == "--data.batch_size=0 must be >= 1"


def test_checkpoint_load_for_evaluation_never_rechecks_training_outputs(tiny_bert_dir, tmp_path):
    """Loading a teacher checkpoint (e.g. benchmarks/quantize_minilm.py) re-runs __init__ with the saved
    export_dir: it must not refuse because that directory now holds the exported model."""
    from lmshrink.modules import TeacherFineTune

    root = tmp_path / "run"
    main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2)])
    assert any((root / "model").iterdir())
    module = TeacherFineTune.load_from_checkpoint(root / "checkpoints" / "last.ckpt", map_location="cpu")
    assert isinstance(module.model, torch.nn.Module)


@pytest.mark.slow
def test_resume_with_a_changed_config_is_refused_naming_the_key(tiny_bert_dir, tmp_path, capsys):
    root = tmp_path / "run"
    main(["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2)])
    fails_cleanly(capsys, ["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2), "--ckpt_path=last"],
                  r"--model.export_dir=.* is not empty: the run being resumed already finished", tmp_path / "none")
    resume = ["fit", *tiny_run_args(tiny_bert_dir, root, train_batches=2), "--ckpt_path=last",
              f"--model.export_dir={tmp_path / 'export2'}", "--model.learning_rate=0.001"]
    fails_cleanly(capsys, resume, r"--ckpt_path last: the config changes the run being resumed: --model.learning_rate: "
                                  r"0.0001 in the checkpoint, 0.001 now.*--allow_resume_changes '\[learning_rate\]'",
                  tmp_path / "nothing-here")
    assert len(list(root.rglob("config*.yaml"))) == 1  # the refused resume left no config of its own
    main([*resume, "--allow_resume_changes=[learning_rate]"])  # said explicitly: allowed
    assert len(list(root.rglob("config*.yaml"))) == 2 and (tmp_path / "export2" / "model.safetensors").is_file()


def _prune_generator(argv):
    from lmshrink.prune_generator import main as prune_main

    return run_command(prune_main, argv)


def _study(argv):
    from lmshrink.study.__main__ import cli

    return cli(argv)


def _gate(argv):
    from lmshrink.gate import cli

    return cli(argv)


@pytest.mark.parametrize("command, argv, expected", [
    (_prune_generator, ["--method", "wanda-0.5", "--save-dir", "out", "--sequence", "8"],
     "error: unrecognized arguments: --sequence 8 (see python -m lmshrink.prune_generator --help)"),
    (_study, ["configs/study/smollm2_generative.yaml", "--seed", "one"],
     "error: argument --seed: invalid int value: 'one' (see python -m lmshrink.study --help)"),
    (_gate, ["--reference", "a"],
     "error: the following arguments are required: --candidate, --config (see python -m lmshrink.gate --help)"),
], ids=["prune_generator", "study", "gate"])
def test_argparse_mistakes_of_the_python_m_commands_are_one_line(command, argv, expected, capsys, tmp_path,
                                                                  monkeypatch):
    """An unknown flag, a bad type or a missing argument: one ``error:`` line naming it and exit code 2, not the
    usage block; nothing is written. ``--help`` still prints the help and exits with 0."""
    monkeypatch.chdir(REPO)
    assert command(argv) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert not (REPO / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        command(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out
