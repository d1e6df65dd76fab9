"""The generative audit through the real CLI and config on a tiny random Llama: every model and metric is
reported, and 2 DDP processes see each prompt and pair once and agree with one process, sampled numbers included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmshrink.cli import main
from lmshrink.errors import run_command
from lmshrink.prune_generator import main as prune_generator
from tests.card_checks import load_card, model_index_values
from tests.helpers import REPO, run_train_py

CONFIG = REPO / "configs" / "generative" / "toxicity_smollm2.yaml"


def audit_args(model_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIG), f"--model.model_path={model_dir}", f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=.",
            "--trainer.enable_progress_bar=false", "--model.max_new_tokens=4", "--model.num_samples=2",
            "--data.num_toxicity_prompts=6", "--data.names_per_group=2", "--data.num_crows_pairs=10",
            "--data.num_stereoset_pairs=10", "--data.num_heldout_texts=10", "--data.generation_batch_size=4",
            "--data.batch_size=4", "--model.heldout_windows=3", "--model.heldout_window=32", *extra]


def audit_record(root: Path) -> dict:
    paths = sorted(root.rglob("generative_audit*.json"))
    assert paths, f"no generative_audit.json under {root}"
    return json.loads(paths[0].read_text())


@pytest.mark.slow
def test_audit_reports_every_model_and_metric(tiny_llama_dir, tmp_path):
    main(["test", *audit_args(tiny_llama_dir, tmp_path)])
    record = audit_record(tmp_path)
    assert record["scorer"]["name"] == "alt-profanity-check"
    assert list(record["models"]) == ["teacher", "l1-0.3", "dynamic-int8"]
    teacher = record["models"]["teacher"]
    assert teacher["toxicity"]["prompts"] == 6 and teacher["names"]["prompts"] == 8
    assert set(teacher["names"]["by_group"]) == {"asian", "black", "hispanic", "white"}
    assert teacher["crows_pairs"]["pairs"] == 10 and teacher["stereoset"]["pairs"] == 10
    assert teacher["perplexity"] > 1 and teacher["windowed_tokens"] == 3 * 31 and teacher["windowed_perplexity"] > 1
    samples = record["samples"]["teacher"]
    assert len(samples) == 14 and all(len(s["scores"]) == 2 == len(s["continuations"]) for s in samples)


def test_a_source_turned_off_runs_no_empty_loader(tiny_llama_dir, tmp_path, recwarn):
    """``num_heldout_texts: 0`` (the study's audit config): no empty test loader, so no Lightning warning asking
    whether that was intended; the windowed perplexity is still measured."""
    main(["test", *audit_args(tiny_llama_dir, tmp_path, "--data.num_heldout_texts=0", "--model.sparsities=[]",
                              "--model.quantize=[]")])
    assert not [w for w in recwarn if "Total length of `DataLoader`" in str(w.message)]
    teacher = audit_record(tmp_path)["models"]["teacher"]
    assert teacher["heldout_tokens"] == 0 and teacher["windowed_perplexity"] > 1


@pytest.mark.slow
def test_two_process_ddp_audit_counts_each_example_once(tiny_llama_dir, tmp_path):
    args = lambda root: audit_args(tiny_llama_dir, root, "--model.sparsities=[]", "--model.quantize=[]")
    main(["test", *args(tmp_path / "one"), "--trainer.accelerator=cpu"])
    run_train_py("test", [*args(tmp_path / "two"), "--config", "configs/trainer/ddp_cpu.yaml"])
    one, two = audit_record(tmp_path / "one")["models"]["teacher"], audit_record(tmp_path / "two")["models"]["teacher"]
    assert two["toxicity"]["prompts"] == 6 and two["names"]["prompts"] == 8
    for source in ("crows_pairs", "stereoset"):
        assert two[source]["pairs"] == 10
        assert two[source]["stereotype_preference"] == pytest.approx(one[source]["stereotype_preference"])
    assert two["heldout_tokens"] == one["heldout_tokens"]
    assert two["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)
    assert two["windowed_tokens"] == one["windowed_tokens"] == 3 * 31  # 2 windows on rank 0, 1 on rank 1
    assert two["windowed_perplexity"] == pytest.approx(one["windowed_perplexity"], rel=1e-5)
    # each prompt draws its own samples, whatever rank and batch it lands in: the sampled numbers agree too
    samples = lambda root: {s["position"]: s["continuations"] for s in audit_record(root)["samples"]["teacher"]}
    assert samples(tmp_path / "two") == samples(tmp_path / "one") and len(samples(tmp_path / "one")) == 14
    for source in ("toxicity", "names"):
        flat = lambda record: {key: value for key, value in record[source].items() if not isinstance(value, dict)}
        assert flat(two) == pytest.approx(flat(one)) and len(flat(one)) >= 3


@pytest.mark.slow
def test_audit_prunes_copies_one_shot_and_records_how(tiny_llama_dir, tmp_path):
    args = audit_args(tiny_llama_dir, tmp_path, "--model.sparsities=[]", "--model.quantize=[]",
                      "--model.prune=[wanda-0.5, sparsegpt-2:4]", "--model.one_shot.num_sequences=4",
                      "--model.one_shot.seq_len=32")
    main(["test", *args])
    record = audit_record(tmp_path)
    assert list(record["models"]) == ["teacher", "wanda-0.5", "sparsegpt-2:4"]
    assert record["pruning"]["wanda-0.5"]["calibration"] == [4, 32]  # magnitude (no calibration): test_oneshot.py
    assert {name: r["sparsity_reached"] for name, r in record["pruning"].items()} == pytest.approx(
        {"wanda-0.5": 0.5, "sparsegpt-2:4": 0.5}, abs=0.01)
    perplexities = {name: model["windowed_perplexity"] for name, model in record["models"].items()}
    assert len(set(perplexities.values())) == 3  # every model measured on its own weights


@pytest.mark.parametrize("extra, message", [
    (["--model.prune=[magnitude-0.5]", "--model.one_shot.seed=3"],
     "--model.one_shot.seed is read by none of --model.prune=['magnitude-0.5']; remove it"),
    (["--model.prune=[magnitude-0.5]", "--model.one_shot.num_sequences=4"],
     "--model.one_shot.num_sequences is read by none of"),
    (["--model.prune=[wanda-50%]"], "'wanda-50%': '50%' is neither a sparsity nor an N:M pattern"),
    (["--model.prune=[obs-0.5]"], "is not <method>-<sparsity>, <method>-<N:M> or <method>-keep<ratio>"),
    (["--model.model_scheme=dynamic-int8"],  # the config's sparsities / quantize would be copies of an int8 model
     "--model.model_scheme=dynamic-int8 quantizes the audited model itself; --model.sparsities would compare"),
    (["--model.model_scheme=static-int8-x86", "--model.sparsities=[]", "--model.quantize=[]"],
     "--model.model_scheme=static-int8-x86 needs calibration data"),
    (["--model.model_scheme=int3", "--model.sparsities=[]", "--model.quantize=[]"],
     "--model.model_scheme: scheme='int3' is unknown"),
    (["--data.generation_batch_size=0"], "error: --data.generation_batch_size=0 must be >= 1"),  # was a traceback
    (["--data.num_toxicity_prompts=-5"], "error: --data.num_toxicity_prompts=-5 must be >= 0 (or null: all)"),
])
def test_audit_refuses_bad_pruning_options_before_loading_anything(tiny_llama_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        main(["test", *audit_args(tiny_llama_dir, tmp_path / "run", *extra)], exit_on_error=True)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_auditing_a_pruned_generator_puts_its_toxicity_on_its_card(tiny_llama_dir, tmp_path):
    pruned = tmp_path / "wanda50"
    assert run_command(prune_generator, ["--model", str(tiny_llama_dir), "--method", "wanda-0.5", "--save-dir",
                                         str(pruned), "--sequences", "2", "--seq-len", "16", "--heldout-windows", "2",
                                         "--heldout-window", "32"]) == 0
    main(["test", *audit_args(tiny_llama_dir, tmp_path / "audit", "--model.students", f"{{wanda: {pruned}}}",
                              "--model.sparsities=[]", "--model.quantize=[]")])
    audit = audit_record(tmp_path / "audit")
    pruning = json.loads((pruned / "pruning_record.json").read_text())
    card, _ = load_card(pruned)
    assert model_index_values(card)[1] == {
        "perplexity": pruning["heldout_after"]["perplexity"],
        "expected_max_toxicity": audit["models"]["wanda"]["toxicity"]["expected_max_toxicity"]}
    section = card.text.split("## Toxicity and bias", 1)[1]
    teacher = audit["models"]["teacher"]["toxicity"]["expected_max_toxicity"]
    assert f"| expected max toxicity | {audit['models']['wanda']['toxicity']['expected_max_toxicity']:.4f} | " \
           f"{teacher:.4f} |" in section


@pytest.mark.parametrize("options, said", [({"quantize": ["dynamic-int8"]}, ["dynamic-int8"]),
                                           ({"model_scheme": "dynamic-int8", "sparsities": []}, ["dynamic-int8"]),
                                           ({"quantize": ["torchao-int8-weight"]}, [])])
def test_the_audit_says_when_a_scheme_makes_its_numbers_depend_on_the_batch(options, said, tiny_llama_dir,
                                                                            monkeypatch):
    """torch.ao's dynamic int8 scales a whole batch's activations together: the audit says so, naming the batch
    options, for the audited model's scheme and its copies' (and not for a weight-only scheme)."""
    from lmshrink.modules import generative_audit

    lines = []
    monkeypatch.setattr(generative_audit, "rank_zero_info", lines.append)
    generative_audit.GenerativeAudit(model_path=str(tiny_llama_dir), heldout_windows=0, **options)
    notes = [line for line in lines if "share a batch" in line]
    assert [line.split(":")[0] for line in notes] == [f"[lmshrink] {scheme}" for scheme in said]
    assert all("--data.generation_batch_size" in line for line in notes)
