"""``python -m lmshrink.prune_generator`` on a tiny random Llama: a pruned, reloadable HF directory with its
record, and every mistake refused in one line before the model loads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmshrink.errors import run_command
from lmshrink.prune_generator import main
from lmshrink.pruning.decoder.oneshot import decoder_sparsity
from tests.card_checks import load_card, model_index_values


def test_prunes_saves_and_reloads_with_its_record(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert run_command(main, ["--model", str(tiny_llama_dir), "--method", "sparsegpt-2:4", "--save-dir", str(out), "--sequences",
                "4", "--seq-len", "32", "--blocksize", "16", "--heldout-windows", "2", "--heldout-window", "64"]) == 0
    printed = capsys.readouterr().out
    assert "sparsegpt block 2/2" in printed and "held-out perplexity after" in printed
    model = AutoModelForCausalLM.from_pretrained(out)
    assert decoder_sparsity(model) == 0.5
    record = json.loads((out / "pruning_record.json").read_text())
    assert record["n_m"] == "2:4" and record["calibration"] == [4, 32] and record["options"]["blocksize"] == 16
    assert record["heldout_after"]["windows"] == 2 and record["heldout_before"]["perplexity"] != record[
        "heldout_after"]["perplexity"]
    dense = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, dense(input_ids=ids).logits)
    assert (out / "tokenizer_config.json").is_file()
    card, _ = load_card(out)  # the pruned generator's card: held-out perplexity from its record, how it was made
    assert model_index_values(card)[1] == {"perplexity": record["heldout_after"]["perplexity"]}
    assert card.data.base_model is None and {"pruning", "sparsegpt"} <= set(card.data.tags)
    assert f"lmshrink prune-generator --model {tiny_llama_dir} --method sparsegpt-2:4" in card.text
    dense_nonzero = sum(int(p.count_nonzero()) for p in AutoModelForCausalLM.from_pretrained(tiny_llama_dir).parameters())
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    assert nonzero < dense_nonzero  # the 2:4 zeros
    assert f"| nonzero parameters | {dense_nonzero} | {nonzero} | {nonzero / dense_nonzero:.3f} |" in card.text


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kprune", "kwon"])
def test_structured_pruning_slices_saves_and_reloads_everywhere(tiny_llama_dir, tmp_path, capsys, method):
    """<method>-keep0.6: key/value groups and MLP channels removed, the FLOPs target met, and the directory loads
    through lmshrink (the audit's loader) and through plain transformers with trust_remote_code."""
    from lmshrink.backbones import load_causal_lm

    out = tmp_path / "structured"
    assert run_command(main, ["--model", str(tiny_llama_dir), "--method", f"{method}-keep0.6", "--save-dir", str(out),
                              "--sequences", "4", "--seq-len", "16", "--batch-size", "2", "--heldout-windows", "2",
                              "--heldout-window", "32"]) == 0
    assert "of the block weights are removed" in capsys.readouterr().out
    record = json.loads((out / "pruning_record.json").read_text())
    assert record["structured"] and record["method"] == method and record["sparsity_reached"] > 0.3
    assert record["flops_kept"] <= 0.6 + 1e-9 if method == "kprune" else record["tuned"]
    ids = torch.tensor([[5, 6, 7, 8]])
    ours, theirs = load_causal_lm(out), AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, rtol=0, atol=0)
    assert ours.config.lmshrink_mlp_channels_per_layer == record["channels_per_layer"]


@pytest.mark.parametrize("extra, message", [
    (["--method", "wanda-0.5", "--percdamp", "0.1"], "error: --percdamp is not read by --method=wanda-0.5; remove it"),
    (["--method", "magnitude-2:4", "--sequences", "8"], "error: --sequences is not read by --method=magnitude-2:4"),
    (["--method", "wanda-1.5"], "error: --method / calibration options: Wanda: sparsity=1.5 must be in (0, 1)"),
    (["--method", "wanda-0.5", "--seq-len", "0"], "seq_len=0 must be >= 1"),
    (["--method", "kprune-0.3"], "'kprune-0.3': kprune takes a FLOPs keep ratio in (0, 1], written kprune-keep0.7"),
    (["--method", "kprune-keep0.7", "--percdamp", "0.1"], "error: --percdamp is not read by --method=kprune-keep0.7"),
    (["--method", "kwon-keep1.5"], "Kwon: flops_keep_ratio=1.5 must be in (0, 1]"),
    (["--method", "l1-heads-0.5"], "with a method among ['kprune', 'kwon', 'magnitude', 'wanda', 'sparsegpt']"),
])
def test_mistakes_are_one_line_before_anything_loads(tiny_llama_dir, tmp_path, capsys, extra, message):
    assert run_command(main, ["--model", str(tiny_llama_dir), "--save-dir", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_used_save_dir_and_a_classifier_are_refused(tiny_llama_dir, tiny_bert_dir, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep")
    assert run_command(main, ["--model", str(tiny_llama_dir), "--method", "wanda-0.5", "--save-dir", str(used)]) == 2
    assert "--save-dir=" in capsys.readouterr().err and (used / "mine.txt").read_text() == "keep"
    assert run_command(main, ["--model", str(tiny_bert_dir), "--method", "wanda-0.5", "--save-dir", str(tmp_path / "o")]) == 2
    assert "is not a causal LM" in capsys.readouterr().err


def test_a_save_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert run_command(main, ["--model", str(tmp_path / "nowhere"), "--method", "magnitude-0.5",
                              "--save-dir", str(target)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: --save-dir={str(target)!r} is a file, not a directory; "
                                                    f"name a new directory (nothing was overwritten)"]
    assert target.read_text() == "mine"
