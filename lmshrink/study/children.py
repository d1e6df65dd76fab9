"""The study's ``train.py`` runs as children of one pre-imported process, so each starts in a fraction of a second.

A study runs two processes per (stage, seed): the build (fit, pruning) and the evaluation, 18 per seed of the
shipped study. Started with ``python train.py`` each spent about 6 s importing torch, lightning, transformers and
lmshrink, and 2 s more in W&B's first ``wandb.init`` (which imports ``wandb.sdk.launch``). Here a
``multiprocessing`` *forkserver* imports those once (:data:`PRELOAD`, in a clean process that has run no torch
operation, so no OpenMP pool is forked) and forks a child per run. Each child is still a process of its own,
exactly as before: its own Lightning trainer, W&B service and seed; its output appended to the run's log; its
exit status the run's; ``train.py`` itself executed as ``__main__`` with the same ``sys.argv`` (so Lightning's
DDP launcher re-launches it as before).

What a child inherits is the environment of the study *when the forkserver started*, updated with the caller's
``os.environ`` at each call; a variable that a library reads only when it is imported (e.g. ``HF_HOME`` in
``huggingface_hub``) keeps its value from the forkserver's start.

On a GPU machine the forkserver's imports initialise CUDA, and CUDA cannot be used again in a forked child
("Cannot re-initialize CUDA in forked subprocess": every GPU run of a study failed so, found on an H200). A child
that finds itself so forked replaces itself with a fresh interpreter running the same command (``execve``: same
process, log and exit status), paying the imports it would have saved.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys

PRELOAD = ("lmshrink.study.preload",)
"""Imported once by the forkserver (see :mod:`lmshrink.study.preload`)."""

_context = None


def forkserver():
    """The forkserver context, its preload set (the server itself starts with the first child)."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        _context = context
    return _context


def start() -> None:
    """Start the forkserver now, so that its imports overlap the study's own checks (the first child would
    otherwise wait for them)."""
    from multiprocessing import forkserver as server

    forkserver()
    server.ensure_running()


def run_child(argv: list[str], log: str, env: dict[str, str]) -> int:
    """Run ``python argv`` (``script.py ...`` or ``-m module ...``) in a child of the forkserver with environment
    ``env``, its output appended to ``log``; returns the exit status (negative: killed by that signal)."""
    process = forkserver().Process(target=_child_main, args=(argv, log, env), daemon=False)
    process.start()
    process.join()
    return process.exitcode


def _child_main(argv: list[str], log: str, env: dict[str, str]) -> None:
    """In the child: output to ``log``, the caller's environment (its ``OMP_NUM_THREADS`` applied to torch), then
    ``argv`` as ``__main__``. A ``SystemExit`` sets the exit status, an exception prints its traceback to the log
    (status 1)."""
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    if _cuda_lost_in_fork():
        os.execve(sys.executable, [sys.executable, *argv], env)
    if env.get("OMP_NUM_THREADS"):  # torch read it when the forkserver imported torch: apply the caller's
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


def _cuda_lost_in_fork() -> bool:
    """Whether this forked child can no longer use CUDA: its parent had initialised it (PyTorch's own flag)."""
    import torch

    return bool(getattr(torch._C, "_cuda_isInBadFork", lambda: False)())
