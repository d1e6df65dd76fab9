"""The README's commands, run as a new user runs them: in the README's order, in one working directory, through
bash, with output redirected to a log file (as on a cluster), each shrunk to a tiny model by arguments appended
after the README's own. A command the README adds is run or skipped here by name, never silently ignored, so
the README and the code cannot drift apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

TINY_TRAINER = ["--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
                "--trainer.val_check_interval=1.0", "--data.eval_batch_size=64"]

SKIPPED = {
    "configs/trainer/ddp_cpu.yaml": "2-process DDP: tests/test_train.py::test_two_process_ddp_matches_one_process",
    "--trainer.accelerator gpu": "needs GPUs",
    "configs/generative/": "SmolLM2 audit: tests/modules/test_generative_audit.py runs it on a tiny Llama",
    "nyu-mll/multi_nli": "a hub dataset needs the network once; the datasets path is tested offline on a "
                         "save_to_disk copy (tests/datamodules/test_grouped_text.py)",
}
"""README commands not run here, each with where it is covered instead."""


def readme_commands() -> list[str]:
    """Every ``python train.py ...`` command of the README's bash blocks, continuation lines joined, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python train.py"):
                commands.append(line)
    return commands


def shrink(command: str, tiny: str) -> list[str]:
    """Arguments appended to a README command so that it runs on the tiny model in seconds."""
    data = [f"--data.tokenizer_path={tiny}"] + (["--trainer.max_epochs=1"] if "conll" in command else [])
    if "configs/teacher/" in command:
        model = [] if "--model.model_path" in command else [f"--model.model_path={tiny}"]
        return model + data + TINY_TRAINER
    if "configs/distill/stereoset_minilm_to_3layer.yaml" in command or "configs/distill/conll_minilm_to_3layer" in command:
        return ["--model.student_num_layers=1"] + data + TINY_TRAINER
    if "configs/prune/" in command:
        sample = "--model.num_samples=32" if "--model.method kwon" in command else "--model.num_tokens=2000"
        return [sample] + data + TINY_TRAINER
    raise AssertionError(f"README command without a shrink rule here (add one, or a SKIPPED entry): {command}")


def _user_files(cwd) -> None:
    """The files the README's "Your own data" command names, in its columns (review, label, dialect)."""
    for name, rows in (("my_train.csv", 60), ("my_val.csv", 24), ("my_test.csv", 24)):
        lines = ["review,label,dialect"] + [f"review number {i} is {'good' if i % 2 else 'bad'},{i % 2},"
                                             f"{'north' if i % 3 else 'south'}" for i in range(rows)]
        (cwd / name).write_text("\n".join(lines) + "\n")


def _run(command: str, cwd, log) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    with open(log, "w") as stream:  # redirected, as on a cluster: no terminal
        return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT,
                              timeout=600)


@pytest.mark.slow
def test_readme_commands_run_in_order(tiny_bert_dir, tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "train.py").symlink_to(REPO / "train.py")
    _user_files(tmp_path)
    commands = readme_commands()
    assert commands[0] == "python train.py fit --config configs/teacher/stereoset_minilm.yaml", "quick start moved?"
    ran = []
    for index, command in enumerate(commands):
        if any(marker in command for marker in SKIPPED):
            continue
        extra = shrink(command, str(tiny_bert_dir))
        if "--ckpt_path last" in command:
            # "Kill the run any way you like ... and run the same command with --ckpt_path last": a Ctrl-C after two
            # steps of a fresh run directory, then the README's resume command for that directory.
            extra.append("--trainer.default_root_dir=runs/resume_demo")
            killed = command.replace(" --ckpt_path last", "") + " " + " ".join(extra) + (
                " --trainer.callbacks+=tests.helpers.InterruptAtStep --trainer.callbacks.step=2")
            _run(killed, tmp_path, tmp_path / f"{index:02d}-killed.log")
            assert (tmp_path / "runs/resume_demo/checkpoints/last.ckpt").is_file(), "Ctrl-C left no checkpoint"
        log = tmp_path / f"{index:02d}.log"
        proc = _run(command + " " + " ".join(extra), tmp_path, log)
        output = log.read_text()
        assert proc.returncode == 0, f"README command {index} failed after the ones before it:\n{command}\n{output[-4000:]}"
        assert "Traceback" not in output, f"{command}\n{output[-4000:]}"
        ran.append(command)
    assert len(ran) >= 7, ran
    runs = tmp_path / "runs"
    assert (runs / "teacher_stereoset_minilm/model/model.safetensors").is_file()
    assert (runs / "distill_minilm_3layer/student/model.safetensors").is_file()
    assert list((runs / "quant_bnb_int8").glob("quantization_bnb-int8_test*.json"))
    assert list((runs / "prune_stereoset_minilm").glob("pruned_model*/config.json"))
    assert list((runs / "resume_demo").glob("group_metrics_test*.json")), "the resumed run did not finish"
    assert (runs / "distill_conll_3layer/student/model.safetensors").is_file()
    assert '"metric": "f1"' in next((runs / "quant_conll_int8").glob("quantization_dynamic-int8_test*.json")).read_text()
    assert list((runs / "my_teacher").glob("group_metrics_test*.json"))
    compared = list((runs / "compare_kprune").glob("group_metrics_test*.json"))
    assert compared and '"reference_name": "reference"' in compared[0].read_text(), "the Compare command compared nothing"
    # Logs redirected to a file still show progress while training (a line per N steps, not a bar at the end).
    assert "[train] epoch 1/1" in (tmp_path / "00.log").read_text()


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    for command in readme_commands():
        if not any(marker in command for marker in SKIPPED):
            shrink(command, "tiny")  # raises for a command nobody decided about
