"""The pruning methods as typed objects: short names map to the same objects the YAML builds, each method refuses
what it does not take, and what it declares (reads a sample, labels, slices, calibration settings) is what runs."""

from __future__ import annotations

import pytest

from lmshrink.errors import OptionError
from lmshrink.pruning.methods import (
    DecoderMethod,
    EncoderMethod,
    KPrune,
    Kwon,
    L1Heads,
    L1Unstructured,
    Magnitude,
    SparseGPT,
    Wanda,
    from_short_name,
)


@pytest.mark.parametrize("spec, method", [
    ("wanda-0.5", Wanda(sparsity=0.5)), ("sparsegpt-2:4", SparseGPT(n_m="2:4")), ("magnitude-0.3", Magnitude(0.3)),
    ("kprune-keep0.7", KPrune(flops_keep_ratio=0.7)), ("kwon-keep0.9", Kwon(flops_keep_ratio=0.9)),
])
def test_a_short_name_is_the_method_and_round_trips(spec, method):
    assert from_short_name(spec) == method and method.short_name == spec
    assert isinstance(method, DecoderMethod)


def test_encoder_short_names_and_rooms():
    assert from_short_name("l1-heads-0.5", EncoderMethod) == L1Heads(0.5)
    assert from_short_name("l1-unstructured-0.4", EncoderMethod) == L1Unstructured(0.4)
    assert L1Heads(0.5) != L1Unstructured(0.5)  # same options, other method
    with pytest.raises(OptionError, match="with a method among \\['kprune', 'kwon', 'magnitude', 'wanda', 'sparsegpt'\\]"):
        from_short_name("l1-heads-0.5")  # an encoder baseline is no generator method
    with pytest.raises(OptionError, match="among \\['kprune', 'kwon', 'l1-unstructured', 'l1-heads'\\]"):
        from_short_name("wanda-0.5", EncoderMethod)


@pytest.mark.parametrize("spec, message", [
    ("wanda", "is not <method>-<sparsity>"), ("obs-0.5", "is not <method>-<sparsity>"),
    ("kprune-0.7", "kprune takes a FLOPs keep ratio in \\(0, 1\\], written kprune-keep0.7"),
    ("wanda-half", "'half' is neither a sparsity nor an N:M pattern"),
    ("wanda-1.5", "Wanda: sparsity=1.5 must be in \\(0, 1\\)"), ("wanda-4:2", "Wanda: N:M pattern '4:2' needs 0 < N < M"),
    ("kwon-keep1.5", "Kwon: flops_keep_ratio=1.5 must be in \\(0, 1\\]"),
])
def test_a_bad_short_name_is_one_line(spec, message):
    with pytest.raises(OptionError, match=message):
        from_short_name(spec)


def test_each_method_takes_only_its_own_options():
    with pytest.raises(TypeError, match="num_tokens"):
        Kwon(num_tokens=100)
    with pytest.raises(TypeError, match="blocksize"):
        Wanda(sparsity=0.5, blocksize=16)
    with pytest.raises(OptionError, match="give exactly one of sparsity and n_m"):
        SparseGPT(sparsity=0.5, n_m="2:4")
    with pytest.raises(OptionError, match="KPrune: num_tokens=0 must be >= 1"):
        KPrune(num_tokens=0)


def test_what_a_method_declares():
    assert (KPrune().slices, KPrune().reads_sample, KPrune().reads_labels) == (True, True, False)
    assert (Kwon().slices, Kwon().reads_labels) == (True, True)
    assert (L1Unstructured().slices, L1Unstructured().reads_sample) == (False, False)
    assert (L1Heads().slices, L1Heads().reads_sample) == (True, False)
    assert Magnitude(0.5).calibration_reads == frozenset() and "blocksize" not in Wanda(0.5).calibration_reads
    assert KPrune(faithful=True, lam_rep=0.1).settings.lam_rep == 0.1 and KPrune(faithful=True).settings.faithful
    assert KPrune(num_tokens=1000).sample_rows(mean_length=20.0, num_rows=30) == 30
    assert KPrune(num_tokens=100).sample_rows(mean_length=20.0, num_rows=30) == 5
    assert Kwon(num_samples=64).sample_rows(mean_length=20.0, num_rows=30) == 30
