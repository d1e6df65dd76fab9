import numpy as np
import pytest

from lmshrink.data.split import stratified_split


def test_fractions_per_stratum_and_determinism():
    strata = np.repeat([0, 1, 2], [100, 50, 10])
    first = stratified_split(strata, (0.1, 0.2), seed=3)
    assert (first == stratified_split(strata, (0.1, 0.2), seed=3)).all()
    assert (first != stratified_split(strata, (0.1, 0.2), seed=4)).any()
    for stratum, size in [(0, 100), (1, 50), (2, 10)]:
        rows = first[strata == stratum]
        assert (rows == "val").sum() == round(size * 0.1)
        assert (rows == "test").sum() == round(size * 0.2)


def test_units_stay_together():
    units = np.repeat(np.arange(40), 3)
    strata = np.repeat(np.arange(40) % 4, 3)
    splits = stratified_split(strata, (0.25, 0.25), seed=0, units=units)
    for unit in range(40):
        assert len(set(splits[units == unit])) == 1


def test_rejects_bad_fractions():
    with pytest.raises(ValueError, match="val_fraction=0.6, test_fraction=0.5"):
        stratified_split(np.zeros(10), (0.6, 0.5), seed=0)
