"""GroupAccuracy against an independent numpy computation, including absent groups, overlap and DDP."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmshrink.metrics.groups import IGNORE_INDEX, GroupAccuracy, as_membership


def numpy_reference(preds, target, membership, num_classes):
    """Straight loops over examples: the definition, written independently of the torch code."""
    preds, target, membership = np.asarray(preds), np.asarray(target), np.asarray(membership, dtype=bool)
    keep = target != IGNORE_INDEX
    preds, target, membership = preds[keep], target[keep], membership[keep]
    group_acc = []
    for g in range(membership.shape[1]):
        rows = membership[:, g]
        group_acc.append(float((preds[rows] == target[rows]).mean()) if rows.any() else math.nan)
    present = [a for a in group_acc if not math.isnan(a)]
    f1s = []
    for c in range(num_classes):
        tp = np.sum((preds == c) & (target == c))
        fp = np.sum((preds == c) & (target != c))
        fn = np.sum((preds != c) & (target == c))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "group_acc": group_acc,
        "avg_acc": float((preds == target).mean()),
        "worst_group_acc": min(present),
        "group_gap": max(present) - min(present),
        "macro_f1": float(np.mean(f1s)),
    }


def random_case(seed, n=200, num_groups=5, num_classes=3, overlap=False, absent_group=None):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, n)
    preds = np.where(rng.random(n) < 0.6, target, rng.integers(0, num_classes, n))
    if overlap:
        membership = rng.random((n, num_groups)) < 0.3
    else:
        membership = np.eye(num_groups, dtype=bool)[rng.integers(0, num_groups, n)]
    if absent_group is not None:
        membership[:, absent_group] = False
    return preds, target, membership


def assert_matches(result, expected):
    got = result["group_acc"].tolist()
    for g, e in zip(got, expected["group_acc"]):
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e, abs=1e-12)
    for key in ("avg_acc", "worst_group_acc", "group_gap", "macro_f1"):
        assert float(result[key]) == pytest.approx(expected[key], abs=1e-12), key


@pytest.mark.parametrize("overlap", [False, True])
def test_matches_numpy_reference_in_batches(overlap):
    preds, target, membership = random_case(0, overlap=overlap)
    metric = GroupAccuracy(num_groups=5, num_classes=3)
    for start in range(0, 200, 37):
        sl = slice(start, start + 37)
        metric.update(torch.tensor(preds[sl]), torch.tensor(target[sl]), torch.tensor(membership[sl]))
    assert_matches(metric.compute(), numpy_reference(preds, target, membership, 3))


def test_absent_group_is_nan_and_excluded_from_worst():
    preds, target, membership = random_case(1, absent_group=2)
    metric = GroupAccuracy(num_groups=5, num_classes=3)
    metric.update(torch.tensor(preds), torch.tensor(target), torch.tensor(membership))
    result = metric.compute()
    assert math.isnan(float(result["group_acc"][2]))
    assert not bool(result["group_present"][2])
    assert float(result["worst_group_acc"]) > 0  # an absent group must not be reported as 0 % worst
    assert_matches(result, numpy_reference(preds, target, membership, 3))


def test_group_ids_logits_and_ignored_rows():
    target = torch.tensor([0, 1, 1, 2, IGNORE_INDEX])
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0], [0, 0, 3.0], [0, 3.0, 0]])
    groups = torch.tensor([0, 0, 1, 1, 1])
    metric = GroupAccuracy(num_groups=2, num_classes=3)
    metric.update(logits, target, groups)
    result = metric.compute()
    # group 0: 2/2 correct; group 1: rows 2 (wrong) and 3 (right); the ignored row 4 counts nowhere.
    assert result["group_acc"].tolist() == [1.0, 0.5]
    assert metric.group_total.tolist() == [2, 2] == result["group_total"].tolist()
    assert float(result["avg_acc"]) == 0.75
    assert float(result["group_gap"]) == 0.5


def test_rejects_bad_group_ids_and_shapes():
    metric = GroupAccuracy(num_groups=2, num_classes=2)
    with pytest.raises(ValueError, match=r"group ids must lie in \[0, 2\)"):
        metric.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="shape"):
        as_membership(torch.zeros(3, 4, dtype=torch.bool), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, shards, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    metric = GroupAccuracy(num_groups=5, num_classes=3)
    preds, target, membership = shards[rank]
    if len(preds):  # an empty shard must still take part in the sum
        metric.update(torch.tensor(preds), torch.tensor(target), torch.tensor(membership))
    result = metric.compute()
    queue.put((rank, {k: v.tolist() for k, v in result.items()}))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("split_at", [90, 0])
def test_two_processes_equal_one_process(split_at):
    preds, target, membership = random_case(2, absent_group=4)
    shards = [
        (preds[:split_at], target[:split_at], membership[:split_at]),
        (preds[split_at:], target[split_at:], membership[split_at:]),
    ]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, shards, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    single = GroupAccuracy(num_groups=5, num_classes=3)
    single.update(torch.tensor(preds), torch.tensor(target), torch.tensor(membership))
    expected = {k: v.tolist() for k, v in single.compute().items()}
    for rank in (0, 1):
        got = results[rank]
        for key, value in expected.items():
            np.testing.assert_allclose(np.array(got[key], dtype=float), np.array(value, dtype=float), equal_nan=True)
