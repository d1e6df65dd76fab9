"""The study's runs as children of the pre-imported forkserver: same output, exit status and environment as
``python script.py`` in a new process, and ``__main__`` as Lightning's DDP launcher expects it."""

import multiprocessing
import os

import torch

from lmshrink.study import children
from lmshrink.study.children import run_child

SCRIPT = """
import os, sys, torch
import __main__
print("argv", sys.argv[1:], "threads", torch.get_num_threads(), "offline", os.environ.get("HF_HUB_OFFLINE"),
      "marker", os.environ.get("LMSHRINK_TEST_MARKER"), "spec", __main__.__spec__, flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "exit":
    raise SystemExit(3)
if sys.argv[1] == "raise":
    raise ValueError("broken on purpose")
"""


def test_child_runs_the_script_as_main_with_the_callers_environment_and_threads(tmp_path):
    script, log = tmp_path / "script.py", tmp_path / "run.log"
    script.write_text(SCRIPT)
    env = {**os.environ, "LMSHRINK_TEST_MARKER": "seen", "OMP_NUM_THREADS": "1"}
    assert run_child([str(script), "fine", "--x=1"], str(log), env) == 0
    text = log.read_text()
    # __spec__ None: Lightning's launcher then re-runs [python, abspath(argv[0]), ...], i.e. the script itself
    assert "argv ['fine', '--x=1'] threads 1 offline 1 marker seen spec None" in text
    assert "to stderr" in text


def test_child_exit_status_and_traceback_reach_the_caller(tmp_path):
    script, log = tmp_path / "script.py", tmp_path / "run.log"
    script.write_text(SCRIPT)
    assert run_child([str(script), "exit"], str(log), dict(os.environ)) == 3
    assert run_child([str(script), "raise"], str(log), dict(os.environ)) == 1
    assert "ValueError: broken on purpose" in log.read_text()


def test_child_runs_a_module(tmp_path):
    log = tmp_path / "run.log"
    env = dict(os.environ)
    assert run_child(["-m", "json.tool", "--help"], str(log), env) == 0
    assert "usage:" in log.read_text()


def _forked_child_with_cuda_lost(argv: list[str], log: str) -> None:
    torch._C._cuda_isInBadFork = lambda: True  # what a fork of a process that initialised CUDA sees
    children._child_main(argv, log, {**os.environ, "LMSHRINK_TEST_MARKER": "after exec"})


def test_a_child_forked_after_cuda_was_initialised_runs_its_command_in_a_fresh_interpreter(tmp_path):
    """On a GPU machine the forkserver's imports initialise CUDA, which a forked child cannot use: the child then
    execs a new interpreter for the same command (torch not yet imported there, the caller's environment, the same
    log and exit status); without CUDA initialised it runs in the forked process (torch already imported)."""
    script, log = tmp_path / "script.py", tmp_path / "run.log"
    script.write_text("import sys, os\nprint('torch preloaded', 'torch' in sys.modules, os.environ.get("
                      "'LMSHRINK_TEST_MARKER'), flush=True)\nraise SystemExit(4)\n")
    process = multiprocessing.get_context("fork").Process(target=_forked_child_with_cuda_lost,
                                                          args=([str(script)], str(log)))
    process.start()
    process.join()
    assert process.exitcode == 4
    assert "torch preloaded False after exec" in log.read_text()
    assert run_child([str(script)], str(log), dict(os.environ)) == 4
    assert "torch preloaded True" in log.read_text()
