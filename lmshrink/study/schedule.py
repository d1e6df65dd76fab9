"""Running a study's (stage, seed) runs: one after the other, or several at once (``--jobs N``).

A run waits for the runs it reads: its ``from`` stage's run (the model it builds on) and, in a classification
study, its seed's teacher (the reference of its paired evaluation). With ``--jobs N`` up to N runs go at once, each
``train.py`` process with ``cores // N`` threads (``OMP_NUM_THREADS``): on a small CPU, small-batch training and
evaluation use two single-threaded processes better than one two-threaded one, and one run's start-up, data
loading and Python work overlaps the other's arithmetic. Measurements made in the study process itself (sizes,
a calibrated scheme's rebuild) take turns. A failed run stops new runs from starting; those running finish, then
the first failure is raised, as one after the other would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from lmshrink.study.runner import input_seed
from lmshrink.study.spec import Stage, StudySpec

Run = tuple[Stage, "int | None"]


def dependencies(spec: StudySpec, stage: Stage, seed: int | None) -> set[tuple[str, int | None]]:
    """``(stage name, seed)`` of the runs that must finish before this one starts."""
    needed = set()
    if stage.source is not None:
        source = spec.stage(stage.source)
        needed.add((source.name, input_seed(spec, source, seed)))
    teacher = spec.stages[0]
    if not spec.generative and stage is not teacher:  # its evaluation is paired with its seed's teacher
        needed.add((teacher.name, input_seed(spec, teacher, seed)))
    return needed


def threads_per_job(jobs: int) -> int:
    """The CPU threads each of ``jobs`` concurrent runs gets (at least one)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_all(spec: StudySpec, runs: list[Run], run_one: Callable[[Stage, int | None], object], jobs: int = 1) -> None:
    """``run_one(stage, seed)`` for every run, in order (``jobs=1``) or up to ``jobs`` at once, each after the runs
    it depends on (a dependency outside ``runs``, e.g. with ``--stage``, is taken as done)."""
    if jobs == 1:
        for stage, seed in runs:
            run_one(stage, seed)
        return
    import torch

    torch.set_num_threads(torch.get_num_threads())  # this process keeps its threads; only its children get fewer
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads_per_job(jobs))  # read by the train.py processes started below
    try:
        _run_concurrently(spec, runs, run_one, jobs)
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before


def _run_concurrently(spec: StudySpec, runs: list[Run], run_one: Callable[[Stage, int | None], object],
                      jobs: int) -> None:
    keys = {(stage.name, seed) for stage, seed in runs}
    waiting = [(stage, seed, dependencies(spec, stage, seed) & keys) for stage, seed in runs]
    done: set[tuple[str, int | None]] = set()
    running: dict[Future, tuple[str, int | None]] = {}
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while waiting or running:
            if not failures:
                for entry in [entry for entry in waiting if entry[2] <= done][: jobs - len(running)]:
                    waiting.remove(entry)
                    running[pool.submit(run_one, entry[0], entry[1])] = (entry[0].name, entry[1])
            if not running:
                break  # a failure stopped the rest (or nothing can start: cannot happen for a checked study)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                if future.exception() is not None:
                    failures.append(future.exception())
                else:
                    done.add(key)
    if failures:
        raise failures[0]


def taking_turns(measure: Callable) -> Callable:
    """``measure`` made safe to call from several runs at once: one call at a time (model loading, export)."""
    lock = threading.Lock()

    def measured(*args, **kwargs):
        with lock:
            return measure(*args, **kwargs)

    return measured
