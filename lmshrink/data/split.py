"""Seeded, stratified train/val/test split that keeps related rows together."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def stratified_split(
    strata: np.ndarray, fractions: tuple[float, float], seed: int, units: np.ndarray | None = None
) -> np.ndarray:
    """Assign each row to train/val/test, returned as an array of split names.

    Rows sharing a ``units`` value (e.g. the three sentences of one StereoSet context) always land in
    the same split, so no context leaks from train into test. Within each stratum (the group of the
    unit's first row) units are shuffled with a generator seeded by ``seed`` alone, then cut by
    ``fractions = (val, test)``; the result depends only on the data and the seed, never on global RNG.
    """
    val_fraction, test_fraction = fractions
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in [0, 1), sum below 1")
    units = np.arange(len(strata)) if units is None else np.asarray(units)
    unit_ids, first_row, unit_of_row = np.unique(units, return_index=True, return_inverse=True)
    unit_strata = np.asarray(strata)[first_row]
    unit_split = np.empty(len(unit_ids), dtype=object)
    rng = np.random.default_rng(seed)
    for stratum in sorted(set(unit_strata.tolist())):
        members = rng.permutation(np.flatnonzero(unit_strata == stratum))
        n_val = int(round(len(members) * val_fraction))
        n_test = int(round(len(members) * test_fraction))
        unit_split[members[:n_val]] = "val"
        unit_split[members[n_val : n_val + n_test]] = "test"
        unit_split[members[n_val + n_test :]] = "train"
    return unit_split[unit_of_row]
