"""The comparison's reference logits kept per batch (``--model.reference_cache_dir``): served only for the same
weights, batch and precision, and the numbers of a run that serves them are those of a run that computes them."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lmshrink.cli import main
from lmshrink.distill.cache import BatchLogitsCache
from tests.helpers import REPO, group_record


def test_a_batch_is_served_only_for_its_own_inputs_and_precision(tmp_path):
    inputs = {"input_ids": torch.tensor([[101, 7, 8, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    cache = BatchLogitsCache(tmp_path, "abc")
    first = cache.logits(inputs, lambda: torch.tensor([[1.0, 2.0, 3.0]]))
    assert cache.logits(inputs, lambda: pytest.fail("computed again")) is not None and cache.served == 1
    other = {**inputs, "input_ids": torch.tensor([[101, 7, 9, 102]])}  # one token differs
    assert torch.equal(cache.logits(other, lambda: torch.zeros(1, 3)), torch.zeros(1, 3))
    wider = {key: value.to(torch.int32) for key, value in inputs.items()}  # same values, other dtype
    assert torch.equal(cache.logits(wider, lambda: torch.ones(1, 3)), torch.ones(1, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cache.logits(inputs, lambda: torch.full((1, 3), 5.0)), torch.full((1, 3), 5.0))
    assert cache.computed == 4
    cache.save()
    again = BatchLogitsCache(tmp_path, "abc", rank=1)  # another rank reads every rank's file
    assert torch.equal(again.logits(inputs, lambda: pytest.fail("computed again")), first)
    assert BatchLogitsCache(tmp_path, "abd").entries == {}  # another fingerprint: nothing
    again.save()  # it computed nothing: writes nothing
    assert [path.name for path in tmp_path.iterdir()] == ["logits_abc.rank0.pt"]


@pytest.fixture(scope="module")
def pair(tiny_bert_varied_dir, tmp_path_factory):
    """A reference and a candidate that differs from it (its classifier shifted)."""
    directory = tmp_path_factory.mktemp("compare_cache")
    shutil.copytree(tiny_bert_varied_dir, directory / "reference")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_varied_dir)
    with torch.no_grad():
        model.classifier.bias[0] -= 0.5
    model.save_pretrained(directory / "candidate")
    AutoTokenizer.from_pretrained(tiny_bert_varied_dir).save_pretrained(directory / "candidate")
    return directory / "reference", directory / "candidate"


def compare(reference, candidate, root, *extra) -> dict:
    main(["test", "--config", str(REPO / "configs/teacher/stereoset_minilm.yaml"), "--model=lmshrink.modules.Compare",
          f"--model.model_path={candidate}", f"--model.reference_path={reference}", f"--data.tokenizer_path={reference}",
          f"--trainer.default_root_dir={root}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--data.eval_batch_size=256", *extra])
    record = group_record(root, "test")
    return {key: value for key, value in record.items() if key not in ("run_dir", "created", "seconds")}


@pytest.mark.slow
def test_served_reference_logits_give_the_numbers_of_running_the_reference(pair, tmp_path, monkeypatch):
    reference, candidate = pair
    counts = []
    original_save = BatchLogitsCache.save
    monkeypatch.setattr(BatchLogitsCache, "save", lambda self: counts.append((self.served, self.computed))
                        or original_save(self))
    cache = f"--model.reference_cache_dir={tmp_path / 'cache'}"
    plain = compare(reference, candidate, tmp_path / "plain")
    assert compare(reference, candidate, tmp_path / "first", cache) == plain
    assert compare(reference, candidate, tmp_path / "second", cache) == plain
    assert counts[0][0] == 0 and counts[0][1] > 0 and counts[1] == (counts[0][1], 0)  # all served the second time
    bf16 = compare(reference, candidate, tmp_path / "bf16", cache, "--trainer.precision=bf16-mixed")
    assert counts[2][0] == 0 and counts[2][1] > 0  # another precision: computed, not served
    assert bf16 == compare(reference, candidate, tmp_path / "bf16_plain", "--trainer.precision=bf16-mixed")

    # the reference's directory rewritten with other weights: never served the old logits
    model = AutoModelForSequenceClassification.from_pretrained(reference)
    with torch.no_grad():
        model.classifier.bias[1] += 1.0
    model.save_pretrained(reference)
    changed = compare(reference, candidate, tmp_path / "changed", cache)
    assert counts[3][0] == 0 and counts[3][1] > 0
    assert changed == compare(reference, candidate, tmp_path / "changed_plain") != plain


@pytest.mark.parametrize("module, option", [("Compare", "reference_cache_dir"), ("Distillation", "teacher_cache_dir")])
def test_a_logits_cache_dir_that_is_a_file_is_refused_before_any_model_loads(module, option, tmp_path):
    """A cache directory that names a file failed when the cache was first written, after the evaluation (or at the
    fit's start) with a traceback; now the module refuses it first, by the option's name (the models' paths here do
    not exist: the refusal comes before they are read)."""
    import lmshrink.modules as modules
    from lmshrink.distill.options import StudentSource

    afile = tmp_path / "notes.txt"
    afile.write_text("not a directory")
    paths = ({"model_path": str(tmp_path / "none"), "reference_path": str(tmp_path / "none")} if module == "Compare"
             else {"teacher_path": str(tmp_path / "none"), "student": StudentSource(num_layers=1)})
    with pytest.raises(FileExistsError, match=rf"--model.{option}='{afile}' is a file, not a directory"):
        getattr(modules, module)(**paths, **{option: str(afile)})
