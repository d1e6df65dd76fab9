"""Running a study's (stage, seed) runs: one after the other, or several at once (``--jobs N``).

A run waits for the runs it reads: its ``from`` stage's run (the model it builds on) and, in a classification
study, its seed's teacher (the reference of its paired evaluation). With ``--jobs N`` up to N runs go at once, each
``train.py`` process with cores / (runs going at once) threads (``OMP_NUM_THREADS``): a run that has to go alone
keeps every core, and when several go, one run's start-up, data loading and Python work overlaps the other's
arithmetic. Measurements made in the study process itself (sizes, parameters, FLOPs) take turns. A
failed run stops new runs from starting; those running finish, then the first failure is raised, as one after the
other would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from lmshrink.study.runner import RUN_THREADS, input_seed
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


def threads_for(concurrent: int) -> int:
    """The CPU threads each of ``concurrent`` runs going at once gets (at least one)."""
    return max(1, (os.cpu_count() or 1) // concurrent)


def run_all(spec: StudySpec, runs: list[Run], run_one: Callable[[Stage, int | None], object], jobs: int = 1) -> None:
    """``run_one(stage, seed)`` for every run, in order (``jobs=1``) or up to ``jobs`` at once, each after the runs
    it depends on (a dependency outside ``runs``, e.g. with ``--stage``, is taken as done). A run started while
    ``n`` runs go at once gets ``cores // n`` threads, so a run that has to go alone (the first teacher) keeps all
    the cores and the cores are never oversubscribed."""
    if jobs == 1:
        for stage, seed in runs:
            run_one(stage, seed)
        return
    keys = {(stage.name, seed) for stage, seed in runs}
    waiting = [(stage, seed, dependencies(spec, stage, seed) & keys) for stage, seed in runs]
    done: set[tuple[str, int | None]] = set()
    running: dict[Future, tuple[str, int | None]] = {}
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while waiting or running:
            if not failures:
                starting = [entry for entry in waiting if entry[2] <= done][: jobs - len(running)]
                threads = threads_for(len(running) + len(starting)) if starting else 0
                for stage, seed, needed in starting:
                    waiting.remove((stage, seed, needed))
                    running[pool.submit(_with_threads, threads, run_one, stage, seed)] = (stage.name, seed)
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


def _with_threads(threads: int, run_one: Callable, stage: Stage, seed: int | None) -> object:
    """``run_one`` in this worker thread, its ``train.py`` processes with ``threads`` CPU threads."""
    RUN_THREADS.count = threads
    try:
        return run_one(stage, seed)
    finally:
        RUN_THREADS.count = None


def taking_turns(measure: Callable) -> Callable:
    """``measure`` made safe to call from several runs at once: one call at a time (model loading, export)."""
    lock = threading.Lock()

    def measured(*args, **kwargs):
        with lock:
            return measure(*args, **kwargs)

    return measured
