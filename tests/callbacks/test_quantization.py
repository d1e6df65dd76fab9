"""The Quantize callback through the real CLI: report equals the group metrics, float reference, DDP."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lmshrink.callbacks import Quantize, quantization
from lmshrink.cli import main
from lmshrink.errors import OptionError
from lmshrink.quantize.size_latency import alternating_latency_ms
from lmshrink.machine import cpu_line
from tests.card_checks import assert_card_reports
from tests.helpers import group_record, run_train_py, tiny_run_args


def quantize_args(scheme: str) -> list[str]:
    return ["--trainer.callbacks+=lmshrink.callbacks.Quantize", f"--trainer.callbacks.scheme={scheme}",
            "--trainer.callbacks.latency_repeats=2"]


def quant_record(root, scheme: str) -> dict:
    paths = list(root.rglob(f"quantization_{scheme}_test.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


@pytest.mark.slow
def test_report_matches_group_metrics_and_float_run(tiny_bert_varied_dir, tmp_path, monkeypatch):
    timings = []

    def timed_in_alternation(runs, rounds, repeats):
        timings.append((sorted(runs), rounds, repeats))
        return alternating_latency_ms(runs, rounds, repeats)

    monkeypatch.setattr(quantization, "alternating_latency_ms", timed_in_alternation)
    main(["test", *tiny_run_args(tiny_bert_varied_dir, tmp_path / "float")])
    main(["test", *tiny_run_args(tiny_bert_varied_dir, tmp_path / "q"), *quantize_args("torchao-int8-dynamic"),
          f"--trainer.callbacks.save_dir={tmp_path / 'saved'}"])
    # float and quantized latencies are timed call by call in alternation, at batch 1 and at batch 32
    assert timings == [(["beside", "model"], 2, 1)] * 2
    record = quant_record(tmp_path / "q", "torchao-int8-dynamic")
    quantized_groups = group_record(tmp_path / "q", "test")  # GroupMetrics saw the quantized model
    float_groups = group_record(tmp_path / "float", "test")
    # one record layout with GroupMetrics (the same GroupComparison), the reference being the float model
    assert record["reference_name"] == "float"
    for key in ("avg_acc", "worst_group_acc", "macro_f1", "ece"):
        assert record[key] == pytest.approx(quantized_groups[key], abs=1e-12)
        assert record["float"][key] == pytest.approx(float_groups[key], abs=1e-12)
    for entry, quantized_entry, float_entry in zip(record["groups"], quantized_groups["groups"], float_groups["groups"]):
        assert entry["accuracy"] == pytest.approx(quantized_entry["accuracy"], abs=1e-12)
        assert entry["reference_accuracy"] == pytest.approx(float_entry["accuracy"], abs=1e-12)
        assert entry["delta_to_reference"] == pytest.approx(entry["accuracy"] - float_entry["accuracy"], abs=1e-12)
        assert entry["model_only_correct"] + entry["reference_only_correct"] <= entry["n"] and "p_holm" in entry
    assert record["float"]["avg_acc"] != pytest.approx(1 / 3)  # the model is not a constant
    sizes = record["size_latency"]
    assert sizes["quantized"]["memory_mb"] < sizes["float"]["memory_mb"]
    assert set(sizes["float"]) == {"memory_mb", "disk_mb", "latency_ms_bs1", "latency_ms_bs32"}
    assert record["skipped_layers"] == {"classifier": "in skip_modules"}
    # the saved quantized model's card: the comparison with the float model, sizes and latency with the CPU
    card = assert_card_reports(tmp_path / "saved", record)
    assert card.data.to_dict()["base_model_relation"] == "quantized" and "load_quantized(" in card.text
    assert "## Size and latency" in card.text and cpu_line() in card.text


@pytest.mark.slow
def test_two_process_ddp_report_equals_one_process(tiny_bert_varied_dir, tmp_path):
    # A weight-only scheme: each example's logits do not depend on what else is in its batch. (LLM.int8
    # picks its 16-bit outlier columns per batch, so its predictions move with the DDP sharding.)
    args = lambda root: [*tiny_run_args(tiny_bert_varied_dir, root), *quantize_args("torchao-int8-weight")]
    main(["test", *args(tmp_path / "one"), "--trainer.accelerator=cpu"])
    run_train_py("test", [*args(tmp_path / "two"), "--config", "configs/trainer/ddp_cpu.yaml"])
    one = quant_record(tmp_path / "one", "torchao-int8-weight")
    two = quant_record(tmp_path / "two", "torchao-int8-weight")
    for key in ("avg_acc", "worst_group_acc", "flip_rate", "worst_group_acc_ci"):
        assert one[key] == pytest.approx(two[key], abs=1e-12), key
    assert one["float"] == pytest.approx(two["float"], abs=1e-7)  # its ece sums float confidences in another order
    counts = ("n", "accuracy", "reference_accuracy", "model_only_correct", "reference_only_correct", "p_holm")
    assert [[g[key] for key in counts] for g in one["groups"]] == [[g[key] for key in counts] for g in two["groups"]]


@pytest.mark.parametrize("scheme, device, message", [
    ("dynamic-int8", "cuda", r"cannot run on cuda: .*; evaluate it on the CPU: --trainer.accelerator cpu"),
    ("static-int8-x86", "cuda", r"cannot run on cuda: .*; evaluate it on the CPU: --trainer.accelerator cpu"),
    ("torchao-int4-tinygemm", "cpu", r"cannot run on cpu: .*CUDA-only kernel"),
])
def test_a_scheme_the_device_cannot_run_is_one_line_naming_the_option(scheme, device, message):
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    with pytest.raises(OptionError, match=r"^--trainer.callbacks.scheme: scheme='" + scheme + "' " + message):
        Quantize(scheme=scheme).setup(trainer=trainer, pl_module=None, stage="test")


def test_refused_in_fit_and_for_unknown_schemes():
    with pytest.raises(ValueError, match="scheme='int2' is unknown"):
        Quantize(scheme="int2")
    with pytest.raises(ValueError, match="post-training quantization for `validate`/`test`"):
        Quantize(scheme="bnb-int8").setup(trainer=None, pl_module=None, stage="fit")


@pytest.mark.slow
def test_qat_run_resumes_after_kill_like_an_uninterrupted_run(tiny_bert_dir, tmp_path):
    from tests.helpers import callbacks_overlay, final_weights

    qat = {"class_path": "lmshrink.callbacks.QuantizationAwareTraining"}
    args = lambda root, overlay: tiny_run_args(tiny_bert_dir, root, "--config", str(overlay), train_batches=8)
    whole = callbacks_overlay(tmp_path / "whole.yaml", every_n_train_steps=3, extra=[qat])
    main(["fit", *args(tmp_path / "whole", whole)])
    killed = callbacks_overlay(tmp_path / "killed.yaml", every_n_train_steps=3,
                               extra=[qat, {"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 5}}])
    assert run_train_py("fit", args(tmp_path / "resumed", killed), check=False).returncode != 0
    main(["fit", *args(tmp_path / "resumed", whole), "--ckpt_path", "last"])
    expected, got = final_weights(tmp_path / "whole"), final_weights(tmp_path / "resumed")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    # the test that ends fit evaluated the converted integer model: its record exists and is the same
    assert group_record(tmp_path / "resumed", "test")["groups"] == group_record(tmp_path / "whole", "test")["groups"]


@pytest.mark.slow
def test_static_int8_is_calibrated_compiled_and_compared_to_float(tiny_bert_varied_dir, tmp_path):
    """static-int8-x86 through the CLI: calibrated on the training split, compiled (first call apart from the
    latency), smaller, and compared with the float model group by group like every scheme."""
    main(["test", *tiny_run_args(tiny_bert_varied_dir, tmp_path / "q"), *quantize_args("static-int8-x86"),
          "--trainer.callbacks.calibration_samples=16", "--trainer.callbacks.latency_batch_sizes=[4]",
          "--trainer.callbacks.embeddings=int8"])
    record = quant_record(tmp_path / "q", "static-int8-x86")
    assert record["compiled"] and record["calibration"] == {"samples": 16, "seed": 0, "split": "train"}
    assert record["backend"] == "pt2e" and record["skipped_layers"] == {"classifier": "in skip_modules"}
    sizes = record["size_latency"]
    assert "bert.embeddings.word_embeddings" in record["quantized_embeddings"]
    assert sizes["quantized"]["memory_mb"] < 0.4 * sizes["float"]["memory_mb"]  # no float weights kept beside
    assert sizes["quantized"]["first_call_s_bs4"] > 0 and "first_call_s_bs4" not in sizes["float"]
    assert record["reference_name"] == "float" and record["float"]["avg_acc"] != pytest.approx(1 / 3)
    assert record["flip_rate"] < 0.1  # int8 with calibrated scales: nearly the float model's predictions
    assert sum(group["n"] for group in record["groups"]) >= len(record["groups"])


def test_latency_is_timed_alone_or_in_alternation_with_the_float_model():
    """Without a float copy (``compare_to_float=False``) a model is timed alone; with one, both are timed."""

    class Network(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, input_ids, attention_mask):
            return self.linear(input_ids.float())

    callback = Quantize(scheme="bf16", latency_batch_sizes=[1, 2], latency_seq_len=4, latency_repeats=1)
    module = type("Module", (), {"device": torch.device("cpu"), "model_inputs": ["input_ids", "attention_mask"]})()
    network = Network()
    alone, nothing = callback._measure(network, module, network)
    timed, beside = callback._measure(network, module, network, beside=Network())
    assert set(alone) == set(timed) == {"memory_mb", "disk_mb", "latency_ms_bs1", "latency_ms_bs2"} and not nothing
    assert set(beside) == {"latency_ms_bs1", "latency_ms_bs2"} and min(beside.values()) > 0


def test_no_batch_sizes_times_nothing_and_refuses_the_timing_options(monkeypatch):
    """``latency_batch_sizes=[]`` (what a study's evaluation passes): sizes only, no call timed or compiled; the
    timing's own options are then refused by name rather than ignored."""
    def never(*args, **kwargs):
        raise AssertionError("timed or compiled although no batch size was asked for")

    for name in ("latency_ms", "alternating_latency_ms", "first_call_seconds"):
        monkeypatch.setattr(quantization, name, never)
    callback = Quantize(scheme="static-int8-x86", latency_batch_sizes=[])
    module = type("Module", (), {"device": torch.device("cpu"), "model_inputs": ["input_ids"]})()
    network = torch.nn.Linear(4, 4)
    stats, beside = callback._measure(network, module, network, compiled=True, beside=torch.nn.Linear(4, 4))
    assert set(stats) == {"memory_mb", "disk_mb"} and beside == {}
    for option in ("latency_seq_len", "latency_repeats"):
        with pytest.raises(OptionError, match=rf"^Quantize: {option}=8 with latency_batch_sizes=\[\]"):
            Quantize(scheme="dynamic-int8", latency_batch_sizes=[], **{option: 8})
    with pytest.raises(OptionError, match="must all be >= 1"):
        Quantize(scheme="dynamic-int8", latency_batch_sizes=[0])
