"""TokenTaggingDataModule: word/sub-token alignment, truncated words counted, the MasakhaNER layout (group =
language), and bad inputs refused before any work."""

from __future__ import annotations

import pytest
import torch

from lmshrink.datamodules import TokenTaggingDataModule
from lmshrink.errors import InputFileError, OptionError
from lmshrink.metrics.groups import IGNORE_INDEX

MASAKHANER_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
SENTENCES = {  # MasakhaNER's own file layout: "word TAG" per line, a blank line between sentences
    "hau": ["Muhammadu B-PER\nBuhari I-PER\nya O\nje O\nAbuja B-LOC\n", "A O\nranar O\nLitinin B-DATE\n"],
    "yor": ["Olusegun B-PER\nObasanjo I-PER\nlo O\nsi O\nEko B-LOC\n", "Ni O\nojo O\nAje B-DATE\n"],
}


def masakhaner_dir(root):
    for language, sentences in SENTENCES.items():
        (root / language).mkdir(parents=True)
        for name in ("train.txt", "dev.txt", "test.txt"):
            (root / language / name).write_text("\n".join(sentences * 2) + "\n")
    return root


def test_builtin_sample_aligns_every_word_to_its_first_sub_token():
    data = TokenTaggingDataModule(max_length=128)
    data.setup()
    assert data.group_names == ["capitals", "normal"] and data.label_names[0] == "O"
    assert [data.split_size(s) for s in ("train", "val", "test")] == [135, 34, 57]
    for split in ("train", "test"):
        dataset = data.datasets[split]
        missed = 0
        for row in range(len(dataset)):
            item = dataset[row]
            for word, start in enumerate(item["word_starts"]):
                if start == -1:
                    missed += 1
                    continue
                assert item["labels"][start] == item["word_labels"][word]
            assert sum(label != IGNORE_INDEX for label in item["labels"]) == sum(s >= 0 for s in item["word_starts"])
        assert missed == data.truncated_words[split]
    assert data.truncated_words == {"train": 10, "val": 0, "test": 0}
    again = TokenTaggingDataModule(max_length=128)
    again.setup()
    assert again.split_fingerprint("test") == data.split_fingerprint("test")


def test_short_max_length_counts_cut_words_and_batches_pad_consistently():
    data = TokenTaggingDataModule(max_length=8, eval_batch_size=5)
    data.setup()
    assert data.truncated_words["test"] > 0
    batch = next(iter(data.test_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["word_labels"].shape == batch["word_starts"].shape
    assert (batch["word_starts"] < batch["input_ids"].shape[1]).all()
    assert ((batch["word_starts"] == -1) & (batch["word_labels"] != IGNORE_INDEX)).any()


def test_masakhaner_layout_groups_by_language(tmp_path):
    data = TokenTaggingDataModule(dataset=str(masakhaner_dir(tmp_path / "masakhaner")), label_names=MASAKHANER_TAGS,
                                  num_labels=9)
    data.setup()
    assert data.group_names == ["hau", "yor"]
    assert [data.split_size(s) for s in ("train", "val", "test")] == [8, 8, 8]
    batch = next(iter(data.ordered_loader("test", 8)))
    assert batch["groups"].sum(0).tolist() == [4, 4]
    assert data.label_names == MASAKHANER_TAGS


def test_masakhaner_tags_outside_label_names_are_refused_with_file_and_line(tmp_path):
    root = masakhaner_dir(tmp_path / "masakhaner")
    (root / "yor" / "test.txt").write_text("Eko B-LOC\n\nIlu O\nIbadan B-GPE\n")
    data = TokenTaggingDataModule(dataset=str(root), label_names=MASAKHANER_TAGS, num_labels=9)
    with pytest.raises(InputFileError, match=r"yor/test.txt: sentence at line 3: tag 'B-GPE' is not among "
                                             r"--data.label_names"):
        data.setup()


def test_a_test_tag_unseen_in_training_is_refused(tmp_path):
    train, val, test = (tmp_path / f"{name}.conll" for name in ("train", "val", "test"))
    train.write_text("Ada B-PER\nsings O\n\nBob B-PER\nruns O\n")
    val.write_text("Ada B-PER\n")
    test.write_text("Ada B-PER\n\nParis B-LOC\n")
    data = TokenTaggingDataModule(dataset=str(train), val_file=str(val), test_file=str(test), num_labels=2)
    with pytest.raises(InputFileError, match=r"test.conll: sentence at line 3: tag 'B-LOC' is not among the "
                                             r"training sentences' tags \['O', 'B-PER'\]"):
        data.setup()


@pytest.mark.parametrize("options, message", [
    ({"label_names": ["B-PER", "I-PER"], "num_labels": 2}, r"--data.label_names=.* must list distinct tags including 'O'"),
    ({"label_names": ["O", "B-PER"], "num_labels": 3}, r"--data.label_names has 2 tags but --data.num_labels=3"),
    ({"num_labels": 5}, r"--data.dataset=conll2003-sample has 9 tags; set --data.num_labels=9"),
    ({"dataset": "nowhere.conll"}, r"--data.dataset='nowhere.conll': no such file or directory"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, r"--data.val_fraction \+ --data.test_fraction = 1.0 leaves no training rows"),
])
def test_bad_options_are_refused_at_construction(options, message):
    with pytest.raises((OptionError, FileNotFoundError), match=message):
        TokenTaggingDataModule(**options)


def test_an_unknown_group_column_is_refused_naming_the_available_ones():
    data = TokenTaggingDataModule(group_columns=["language"])
    with pytest.raises(OptionError, match=r"--data.group_columns: 'language' is not a sentence column here "
                                          r"\(available: \['case', 'document'\]\)"):
        data.setup()


def test_document_and_case_groups_overlap():
    data = TokenTaggingDataModule(group_columns=["case", "document"])
    data.setup()
    assert data.group_names[:3] == ["case=capitals", "case=normal", "document=doc01"] and len(data.group_names) == 17
    groups = data.datasets["test"].groups
    assert torch.equal(groups.sum(1), torch.full((len(groups),), 2))
