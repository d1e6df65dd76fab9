"""Model cards on their own: what a card says, when it is written, and what it never touches (no training runs)."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard

from lmshrink.cards import BESIDE_FILE, add_measurement, rebuild_card, start_card, weights_digest
from lmshrink.cards.render import base_model, model_name
from lmshrink.command import main as lmshrink
from lmshrink.metrics.comparison import GroupComparison
from lmshrink.quantize import apply
from tests.card_checks import assert_card_reports, load_card, model_index_values

GROUPS = ["stereotype|gender", "stereotype|race", "anti-stereotype|race"]


def comparison_record(pay: bool, n: int = 200, seed: int = 0) -> dict:
    """A real per-group record (GroupComparison's report) of a model against a reference: with ``pay``, the model
    is wrong on 60 % of the first group where the reference was right; elsewhere the two mostly agree."""
    generator = torch.Generator().manual_seed(seed)
    groups = torch.arange(len(GROUPS)).repeat_interleave(n)
    labels = torch.randint(0, 3, (len(groups),), generator=generator)
    reference = labels.clone()
    wrong = torch.rand(len(groups), generator=generator) < 0.2
    reference[wrong] = (labels[wrong] + 1) % 3
    preds = reference.clone()
    if pay:
        hit = (groups == 0) & (torch.rand(len(groups), generator=generator) < 0.6)
        preds[hit] = (reference[hit] + 1) % 3
    comparison = GroupComparison(GROUPS, 3, "teacher")
    logits, reference_logits = torch.nn.functional.one_hot(preds, 3) * 4.0, torch.nn.functional.one_hot(reference, 3) * 4.0
    comparison.update(preds, logits, labels, groups, reference, reference_logits)
    return comparison.report(comparison.compute(), "test").record | {"stage": "test"}


def write_record(tmp_path, record: dict, name: str = "group_metrics_test.json"):
    path = tmp_path / name
    path.write_text(json.dumps(record))
    return path


def started(directory, parent="minilm", digest="d1", **made):
    directory.mkdir(parents=True, exist_ok=True)
    start_card(directory, "classifier", {"parent": parent, "method": "Distillation", "family": "distillation",
                                         "dataset": "stereoset", **made},
               {"trust_remote_code": False, "quantized": None}, digest)
    return directory


def test_who_pays_names_the_significant_group_with_its_interval_and_the_table_equals_the_record(tmp_path):
    record = comparison_record(pay=True)
    assert record["significant_groups"] == ["stereotype|gender"]
    directory = started(tmp_path / "student")
    add_measurement(directory, "test", write_record(tmp_path, record), record, digest="d1")
    card = assert_card_reports(directory, record)
    row = record["groups"][0]
    sentence = next(line for line in card.text.splitlines() if line.startswith("- **stereotype|gender** pays"))
    assert f"{100 * row['delta_to_reference']:+.1f} points" in sentence
    assert f"[{row['delta_ci_low']:.4f}, {row['delta_ci_high']:.4f}]" in sentence and "Holm p = " in sentence
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.datasets == ["McGill-NLP/stereoset"] and card.data.pipeline_tag == "text-classification"


def test_no_significant_group_says_so_with_the_smallest_group(tmp_path):
    record = comparison_record(pay=False, n=40)
    assert record["significant_groups"] == []
    directory = started(tmp_path / "student")
    add_measurement(directory, "test", None, record, digest="d1")
    card, _ = load_card(directory)
    assert "No group changed significantly against the teacher (Holm-corrected p < 0.05), with 40 examples in the " \
           "smallest group." in card.text
    assert "not measured" not in card.text.lower()


def test_a_measurement_of_other_weights_stays_off_the_card(tmp_path):
    directory = started(tmp_path / "model", digest="weights-a")
    before = (directory / "README.md").read_text()
    record = comparison_record(pay=True)
    assert add_measurement(directory, "test", None, record, digest="weights-b") is None
    assert (directory / "README.md").read_text() == before
    assert add_measurement(directory, "test", None, record, digest="weights-a") is not None
    assert "## Per-group results" in (directory / "README.md").read_text()


def test_weights_digest_tells_weights_apart_and_declines_quantized_ones():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    same = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    same.load_state_dict(model.state_dict())
    assert weights_digest(model) == weights_digest(same)
    with torch.no_grad():
        same[0].weight[0, 0] += 1e-6
    assert weights_digest(model) != weights_digest(same)
    quantized = apply(model, "dynamic-int8", skip=[]).runnable
    assert weights_digest(quantized) is None


def test_a_hand_written_readme_is_never_replaced(tmp_path, capsys):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "README.md").write_text("# My model\n\nWritten by hand.\n")
    started(directory)
    assert (directory / "README.md").read_text() == "# My model\n\nWritten by hand.\n"
    assert ModelCard.load(directory / BESIDE_FILE).data.tags == ["lmshrink", "distillation"]
    assert lmshrink(["card", str(directory)]) == 0
    assert "beside your own README.md" in capsys.readouterr().out
    assert (directory / "README.md").read_text() == "# My model\n\nWritten by hand.\n"


def test_rebuild_reads_the_run_record_again_and_keeps_the_copy_when_it_is_gone(tmp_path):
    directory = started(tmp_path / "student")
    first, second = comparison_record(pay=True), comparison_record(pay=False, seed=1)
    source = write_record(tmp_path, first)
    add_measurement(directory, "test", source, first, digest="d1")
    (directory / "README.md").unlink()
    source.write_text(json.dumps(second))  # the run's record is what a rebuild reads
    rebuild_card(directory)
    assert_card_reports(directory, second)
    source.unlink()  # the directory copied away from its run: the copy in lmshrink_card.json is used
    rebuild_card(directory)
    assert_card_reports(directory, second)


def test_base_model_follows_local_lmshrink_parents_to_the_hub(tmp_path):
    teacher = started(tmp_path / "teacher", parent="minilm")
    student = started(tmp_path / "student", parent=str(teacher))
    assert base_model(str(student)) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model(str(tmp_path)) is None  # a local directory lmshrink did not write
    assert base_model("org/model") == "org/model"
    card, _ = load_card(student)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and f"`{teacher}`" in card.text


def test_an_unmeasured_model_has_no_model_index_and_says_how_to_measure_it(tmp_path):
    card, _ = load_card(started(tmp_path / "model"))
    assert card.data.eval_results is None and "run `lmshrink test`" in card.text


def test_card_command_mistakes_are_one_line(tmp_path, capsys):
    assert lmshrink(["card", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path}: no lmshrink_card.json, so not a model directory lmshrink wrote (nothing to "
                   f"build a card from)"]
    started(tmp_path / "model")  # the run directory named instead of its model: the model is named
    assert lmshrink(["card", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"; the model directories in it: {tmp_path / 'model'}")


def test_model_index_round_trips_for_a_generator(tmp_path):
    directory = tmp_path / "gen"
    directory.mkdir()
    after = {"perplexity": 23.5, "windows": 4, "window": 64}
    start_card(directory, "generator", {"parent": "smollm2", "method": "Pruning", "family": "pruning",
                                        "method_tag": "wanda"},
               {"trust_remote_code": False, "quantized": None}, None,
               [("perplexity", None, {"before": {"perplexity": 20.0, "windows": 4, "window": 64}, "after": after})])
    card, _ = load_card(directory)
    _, values, _ = model_index_values(card)
    assert values == {"perplexity": 23.5}
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Held-out perplexity 23.50 (the parent: 20.00)" in card.text


@pytest.mark.parametrize("digest", [None, "d1"])
def test_a_directory_without_a_card_record_is_left_alone(tmp_path, digest):
    assert add_measurement(tmp_path, "test", None, comparison_record(pay=False), digest=digest) is None
    assert list(tmp_path.iterdir()) == []


def test_a_model_in_a_run_directory_is_named_after_its_run(tmp_path):
    run = tmp_path / "quant_bnb_int8"
    assert model_name(run / "model") == "quant_bnb_int8" and model_name(run / "pruned_model-1") == "quant_bnb_int8-1"
    assert model_name(tmp_path / "minilm-kprune50") == "minilm-kprune50"


def test_a_damaged_card_record_is_named_and_never_fails_the_measuring_run(tmp_path, capsys):
    directory = started(tmp_path / "model")
    damaged = (directory / "lmshrink_card.json").read_text()[:200]
    (directory / "lmshrink_card.json").write_text(damaged)
    assert add_measurement(directory, "test", None, comparison_record(pay=False), digest="d1") is None
    warning = capsys.readouterr().err
    assert f"{directory / 'lmshrink_card.json'}: line" in warning and "was not updated" in warning
    assert (directory / "lmshrink_card.json").read_text() == damaged  # left as it was
    assert lmshrink(["card", str(directory)]) == 2  # rebuilding it is the user's request: one error line
    assert capsys.readouterr().err.startswith(f"error: {directory / 'lmshrink_card.json'}: line")


def test_sizes_without_a_timing_say_latency_was_not_measured():
    """A quantization run that timed nothing (a study's evaluation) puts its sizes on the card, and no sentence
    claiming the two models were timed."""
    from lmshrink.cards.sections import size_latency

    def card_section(quantized: dict) -> str:
        stats = {"float": {"memory_mb": 80.0, "disk_mb": 81.0, **({"latency_ms_bs1": 10.0} if len(quantized) > 2 else {})},
                 "quantized": quantized, "cpu": "a CPU (avx512_vnni)"}
        return size_latency({"measurements": {"test": {"data": {"size_latency": stats}}}})

    untimed = card_section({"memory_mb": 40.0, "disk_mb": 41.0})
    assert "| memory_mb | 80.00 | 40.00 | 0.500 |" in untimed and "latency was not measured by this run" in untimed
    assert "timed" not in untimed
    timed = card_section({"memory_mb": 40.0, "disk_mb": 41.0, "latency_ms_bs1": 5.0})
    assert "| latency_ms_bs1 | 10.00 | 5.00 | 0.500 |" in timed and "timed call by call in alternation" in timed
