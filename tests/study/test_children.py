"""The study's runs as children of the pre-imported forkserver: same output, exit status and environment as
``python script.py`` in a new process, and ``__main__`` as Lightning's DDP launcher expects it."""

import os

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
