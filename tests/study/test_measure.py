"""The study's latency step: every model timed side by side, a computation that repeats timed once."""

from __future__ import annotations

import pytest
from transformers import BertConfig, BertForSequenceClassification

import lmshrink.study.measure as measure_module
from lmshrink.backbones import load_tokenizer
from lmshrink.study.measure import StudyMeasure
from tests.conftest import save_tiny_bert
from tests.helpers import REPO


@pytest.fixture(scope="module")
def measure() -> StudyMeasure:
    return StudyMeasure(str(REPO / "configs" / "teacher" / "stereoset_minilm.yaml"))


def test_models_that_compute_the_same_are_timed_once_and_share_the_time(measure, tmp_path, monkeypatch):
    first = save_tiny_bert(tmp_path / "first", seed=0)
    other_values = save_tiny_bert(tmp_path / "other_values", seed=1)
    narrower = tmp_path / "narrower"
    config = BertConfig.from_pretrained(first)
    config.intermediate_size = 48
    BertForSequenceClassification(config).save_pretrained(narrower)
    load_tokenizer("minilm").save_pretrained(narrower)
    timed = []

    def alternating(runs, rounds, repeats):
        timed.append(len(runs))
        return {key: float(index) for index, key in enumerate(runs)}

    monkeypatch.setattr(measure_module, "alternating_latency_ms", alternating)
    quantized = []
    quantize = measure.quantize
    monkeypatch.setattr(measure, "quantize", lambda model, scheme, *args: quantized.append(scheme)
                        or quantize(model, scheme, *args))
    models = {"teacher/0": (first, None, None), "teacher/1": (other_values, None, None),
              "narrow/0": (narrower, None, None), "int8/0": (first, "dynamic-int8", None),
              "int8/1": (other_values, "dynamic-int8", None)}
    latencies = measure.latencies(models, rounds=1, repeats=1)
    assert timed == [3]  # dense float of one shape, the narrower one, dynamic int8 of the first shape
    assert quantized == ["dynamic-int8"]  # the second seed's copy is not quantized again for nothing
    assert latencies["teacher/0"] == latencies["teacher/1"] != latencies["narrow/0"]
    assert latencies["int8/0"] == latencies["int8/1"] != latencies["teacher/0"]
    assert set(latencies) == set(models)
