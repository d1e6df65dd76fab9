"""``lmshrink study --jobs N``: every run starts only after the runs it reads (its ``from`` stage's run and, in a
classification study, its seed's teacher), at most N at once, each process with the cores shared by the runs going
when it starts; a failure stops new runs and is raised once the running ones end."""

from __future__ import annotations

import os
import threading
import time

import pytest
import yaml

from lmshrink.study.runner import RUN_THREADS
from lmshrink.study.schedule import dependencies, run_all, threads_for
from lmshrink.study.spec import load_spec
from tests.helpers import REPO
from tests.study.test_study import write_study


@pytest.fixture
def spec(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    raw = yaml.safe_load(write_study(tmp_path, tiny_bert_dir).read_text())
    raw["stages"][0]["seeded"] = True
    raw["stages"] += [{"name": "int8", "kind": "quantize", "from": "kprune", "scheme": "dynamic-int8"},
                      {"name": "l1", "kind": "prune", "from": "teacher", "seeded": False,
                       "config": "configs/prune/kprune_stereoset.yaml", "args": ["--model.method=L1Heads"]}]
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump(raw))
    return load_spec(tmp_path / "jobs.yaml")


def test_a_run_depends_on_its_source_and_its_seeds_teacher(spec):
    assert dependencies(spec, spec.stage("teacher"), 1) == set()
    assert dependencies(spec, spec.stage("kprune"), 1) == {("teacher", 1)}
    assert dependencies(spec, spec.stage("int8"), 1) == {("kprune", 1), ("teacher", 1)}
    assert dependencies(spec, spec.stage("l1"), 0) == {("teacher", 0)}


def runs_of(spec):
    return [(stage, seed) for stage in spec.stages for seed in spec.seeds_of(stage)]


def test_runs_wait_for_what_they_read_and_never_exceed_the_jobs(spec):
    log, lock, active = [], threading.Lock(), [0]
    threads, busy = [], [0, 0]  # threads of the runs going now, the most at any moment

    def run_one(stage, seed):
        with lock:
            active[0] += 1
            busy[0] += RUN_THREADS.count
            busy[1] = max(busy)
            log.append(("start", stage.name, seed, active[0]))
            threads.append((stage.name, RUN_THREADS.count))
        # seed 0's runs start while seed 1's teacher still goes: a start beside a running run, every time
        time.sleep({("teacher", 0): 0.05, ("teacher", 1): 0.4}.get((stage.name, seed), 0.01))
        with lock:
            active[0] -= 1
            busy[0] -= RUN_THREADS.count
            log.append(("end", stage.name, seed, active[0]))

    run_all(spec, runs_of(spec), run_one, jobs=2)
    # the two teachers start together and share the cores; a run that starts alone (how often depends on the
    # machine's timing) may take them all; the runs going at once never hold more threads than the machine has
    assert [count for name, count in threads if name == "teacher"] == [threads_for(2)] * 2
    assert all(count in (threads_for(1), threads_for(2)) for _, count in threads)
    assert busy[1] <= max(os.cpu_count() or 1, 2)
    starts = [entry for entry in log if entry[0] == "start"]
    assert len(starts) == len(runs_of(spec)) and max(entry[3] for entry in starts) <= 2
    assert max(entry[3] for entry in starts) == 2  # two at once really happened (teachers of both seeds)
    position = {(kind, name, seed): index for index, (kind, name, seed, _) in enumerate(log)}
    for stage, seed in runs_of(spec):
        for needed in dependencies(spec, stage, seed):
            assert position[("end", *needed)] < position[("start", stage.name, seed)], (stage.name, seed, needed)


def test_a_failed_run_stops_new_runs_and_is_raised(spec):
    started = []

    def run_one(stage, seed):
        started.append((stage.name, seed))
        if (stage.name, seed) == ("teacher", 0):
            raise RuntimeError("train.py fit failed (1); see teacher/seed0/train.log")
        time.sleep(0.05)

    with pytest.raises(RuntimeError, match="teacher/seed0"):
        run_all(spec, runs_of(spec), run_one, jobs=2)
    assert not any(name != "teacher" for name, _ in started)  # nothing after the failure started


def test_a_run_that_must_go_alone_keeps_every_core(spec, monkeypatch):
    """One seed: the teacher has to run alone (everything reads it), so it gets all the cores, not cores / N."""
    from dataclasses import replace

    from lmshrink.study import schedule

    monkeypatch.setattr(schedule.os, "cpu_count", lambda: 8)
    one_seed = replace(spec, seeds=(0,))
    counts = {}
    run_all(one_seed, runs_of(one_seed), lambda stage, seed: counts.setdefault(stage.name, RUN_THREADS.count), jobs=4)
    assert counts["teacher"] == 8 and counts["int8"] in (2, 4, 8)
    assert RUN_THREADS.__dict__.get("count") is None  # nothing leaks to the caller's thread
