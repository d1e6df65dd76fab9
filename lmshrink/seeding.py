"""Per-batch seeding: dropout masks become a function of (seed, epoch, batch, rank), not of RNG history.

Restoring global RNG states from a checkpoint is fragile (data-loader creation and validation consume
random numbers at points that differ between an interrupted and an uninterrupted run). Re-seeding at
every training batch, as fairseq does per update, makes a resumed run draw exactly the masks the
uninterrupted run drew.
"""

from __future__ import annotations

import os

import torch

_MIX = 0x9E3779B1  # odd 32-bit constant (golden ratio) to spread consecutive indices apart


def batch_seed(base_seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    return (base_seed * _MIX + epoch * 1_000_003 + batch_idx * 7919 + rank * 104_729) % (2**63 - 1)


def run_seed(default: int = 0) -> int:
    """The run's seed, as ``seed_everything`` (``--seed_everything``) recorded it in ``PL_GLOBAL_SEED``."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))


def seed_training_batch(epoch: int, batch_idx: int, rank: int) -> None:
    """Seed torch's global generator for one training batch from the run seed."""
    base_seed = run_seed()
    torch.manual_seed(batch_seed(base_seed, epoch, batch_idx, rank))
