"""The README and the guides, used as a new user uses them: every command of their bash blocks, in reading order
(README, then the guides in the order of :data:`GUIDES`), in one working directory, through bash, with output
redirected to a log file (as on a cluster), each shrunk to a tiny model by arguments appended after the
documented ones. A command the docs add is run, or skipped here by name with where it is covered instead, never
silently ignored; and every relative link and anchor of the docs resolves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

GUIDES = ["distillation", "quantization", "pruning-encoders", "generative-audit", "pruning-generators", "study",
          "beyond-accuracy", "model-cards", "ner", "operations", "architecture"]
"""The guides in the order a reader meets their commands (each may use what an earlier one made)."""
DOCS = [REPO / "README.md", *(REPO / "docs" / f"{name}.md" for name in GUIDES)]

TINY_TRAINER = ["--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
                "--trainer.val_check_interval=1.0", "--data.eval_batch_size=64"]

SKIPPED = {
    "python3 -m venv": "the install: CI runs the README's <!-- ci:install --> block on a clean clone (.ci/run)",
    "pip install": "the install: CI runs the README's <!-- ci:install --> block on a clean clone (.ci/run)",
    "python -m pytest": "the test suite itself: CI runs the README's <!-- ci:test --> block (.ci/run)",
    "configs/trainer/ddp_cpu.yaml": "2-process DDP: tests/test_train.py::test_two_process_ddp_matches_one_process",
    "--trainer.accelerator gpu": "needs GPUs",
    "torchrun": "needs GPUs on two nodes",
    "sbatch": "needs SLURM",
    "scripts/slurm/submit_study.sh": "needs SLURM",
    "configs/generative/": "SmolLM2 audit: tests/modules/test_generative_audit.py runs it on a tiny Llama",
    "lmshrink study": "a study trains for an hour: tests/study/ runs whole tiny studies, report-only and resume",
    "nyu-mll/multi_nli": "a hub dataset needs the network once; the datasets path is tested offline on a "
                         "save_to_disk copy (tests/datamodules/test_grouped_text.py)",
}
"""Documented commands not run here, each with where it is covered instead."""


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every command line of the docs' bash blocks, continuation lines joined, in order."""
    commands = []
    for path in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    commands.append((path.name, line))
    return commands


def is_train(command: str) -> bool:
    return re.match(r"lmshrink (fit|validate|test) ", command) is not None


def shrink(command: str, tiny: str, tiny_llama: str) -> list[str]:
    """Arguments appended to a documented command so that it runs on a tiny model in seconds."""
    data = [f"--data.tokenizer_path={tiny}"] + (["--trainer.max_epochs=1"] if "conll" in command else [])
    if re.match(r"lmshrink (--help|configs|card )", command):
        return []
    if command.startswith("lmshrink gate "):
        return ["--", f"--data.tokenizer_path={tiny}", "--trainer.limit_test_batches=2", "--data.eval_batch_size=64"]
    if command.startswith("lmshrink prune-generator "):
        return [f"--model={tiny_llama}", "--sequences=4", "--seq-len=16", "--heldout-windows=2",
                "--heldout-window=16"]
    if not is_train(command):
        raise AssertionError(f"documented command without a shrink rule here (add one, or a SKIPPED entry): {command}")
    if re.search(r"--config (configs/)?teacher/", command):
        model = [] if "--model.model_path" in command else [f"--model.model_path={tiny}"]
        return model + data + TINY_TRAINER
    if re.search(r"--config (configs/)?distill/(stereoset|conll)_minilm_to_3layer", command):
        return ["--model.student.num_layers=1"] + data + TINY_TRAINER
    if re.search(r"--config (configs/)?prune/", command):
        sample = "--model.method.num_samples=32" if "--model.method Kwon" in command else "--model.method.num_tokens=2000"
        return [sample] + data + TINY_TRAINER
    raise AssertionError(f"documented command without a shrink rule here (add one, or a SKIPPED entry): {command}")


def _user_files(cwd: Path) -> None:
    """The files the "Your own data" command names, in its columns (review, label, dialect)."""
    for name, rows in (("my_train.csv", 60), ("my_val.csv", 24), ("my_test.csv", 24)):
        lines = ["review,label,dialect"] + [f"review number {i} is {'good' if i % 2 else 'bad'},{i % 2},"
                                             f"{'north' if i % 3 else 'south'}" for i in range(rows)]
        (cwd / name).write_text("\n".join(lines) + "\n")


def _run(command: str, cwd: Path, log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    with open(log, "w") as stream:  # redirected, as on a cluster: no terminal
        return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT,
                              timeout=600)


@pytest.mark.slow
def test_doc_commands_run_in_order(tiny_bert_dir, tiny_llama_dir, tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    _user_files(tmp_path)
    commands = doc_commands()
    assert commands[2] == ("README.md", "lmshrink fit --config teacher/stereoset_minilm"), "quick start moved?"
    ran = []
    for index, (doc, command) in enumerate(commands):
        if any(marker in command for marker in SKIPPED):
            continue
        extra = shrink(command, str(tiny_bert_dir), str(tiny_llama_dir))
        if "--ckpt_path last" in command:
            # "Kill the run any way you like ... and run the same command with --ckpt_path last": a Ctrl-C after two
            # steps of a fresh run directory, then the documented resume command for that directory.
            extra.append("--trainer.default_root_dir=runs/resume_demo")
            killed = command.replace(" --ckpt_path last", "") + " " + " ".join(extra) + (
                " --trainer.callbacks+=tests.helpers.InterruptAtStep --trainer.callbacks.step=2")
            _run(killed, tmp_path, tmp_path / f"{index:02d}-killed.log")
            assert (tmp_path / "runs/resume_demo/checkpoints/last.ckpt").is_file(), "Ctrl-C left no checkpoint"
        log = tmp_path / f"{index:02d}.log"
        proc = _run(command + " " + " ".join(extra), tmp_path, log)
        output = log.read_text()
        allowed = (0, 1) if command.startswith("lmshrink gate ") else (0,)  # a tiny model may fail the gate
        assert proc.returncode in allowed, (f"{doc} command {index} failed after the ones before it:\n{command}\n"
                                            f"{output[-4000:]}")
        assert "Traceback" not in output, f"{command}\n{output[-4000:]}"
        ran.append(command)
    assert len(ran) >= 14, ran
    runs = tmp_path / "runs"
    assert (runs / "teacher_stereoset_minilm/model/model.safetensors").is_file()
    assert (runs / "distill_minilm_3layer/student/model.safetensors").is_file()
    assert list((runs / "quant_bnb_int8").glob("quantization_bnb-int8_test*.json"))
    assert list((runs / "prune_stereoset_minilm").glob("pruned_model*/config.json"))
    assert (runs / "smollm2_sparsegpt50/pruning_record.json").is_file()
    assert list((runs / "gate").glob("gate*.json")), "the gate wrote no verdict"
    # every model directory the walk wrote carries its card, with its numbers; the gated one with the verdict
    for directory in ("teacher_stereoset_minilm/model", "distill_minilm_3layer/student", "smollm2_sparsegpt50",
                      "quant_bnb_int8/model",
                      "prune_stereoset_minilm/pruned_model", "distill_conll_3layer/student"):
        assert "model-index:" in (runs / directory / "README.md").read_text(), directory
    assert "## Gate" in (runs / "prune_stereoset_minilm/pruned_model/README.md").read_text()
    assert list((runs / "resume_demo").glob("group_metrics_test*.json")), "the resumed run did not finish"
    assert (runs / "distill_conll_3layer/student/model.safetensors").is_file()
    assert '"metric": "f1"' in next((runs / "quant_conll_int8").glob("quantization_dynamic-int8_test*.json")).read_text()
    assert list((runs / "my_teacher").glob("group_metrics_test*.json"))
    compared = list((runs / "compare_kprune").glob("group_metrics_test*.json"))
    assert compared and '"reference_name": "reference"' in compared[0].read_text(), "the Compare command compared nothing"
    # Logs redirected to a file still show progress while training (a line per N steps, not a bar at the end).
    assert "[train] epoch 1/1" in (tmp_path / "02.log").read_text()
    assert "prune-generator" in (tmp_path / "03.log").read_text(), "lmshrink --help lists no subcommands"


def test_every_doc_command_is_run_or_skipped_with_a_reason():
    for _, command in doc_commands():
        if not any(marker in command for marker in SKIPPED):
            shrink(command, "tiny", "tiny-llama")  # raises for a command nobody decided about


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def all_docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("doc", all_docs(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_every_guide_is_reachable_from_the_readme():
    readme = (REPO / "README.md").read_text()
    for name in GUIDES:
        assert f"docs/{name}.md" in readme, f"docs/{name}.md is not linked from the README"
