"""Tagged-sentence readers: the shipped CoNLL-2003 sample, CoNLL and JSONL files, and every bad input refused
naming the file and line."""

from __future__ import annotations

import json

import pytest

from lmshrink.data.conll import conll_sample, read_conll, read_tagged_jsonl, sentence_case
from lmshrink.data.tag_schemes import scheme_evidence
from lmshrink.errors import InputFileError


def test_the_shipped_sample_reads_as_conll_2003():
    frame = conll_sample()
    assert len(frame) == 226 and frame["document"].nunique() == 15
    first = frame.iloc[0]
    assert first.tokens[:4] == ["SOCCER", "-", "JAPAN", "GET"] and first.tags[2] == "B-LOC"
    assert first.line == 3 and first.case == "capitals" and first.document == "doc01"
    assert (frame["case"] == "capitals").sum() == 27
    assert sum(len(tags) for tags in frame["tags"]) == 3140


@pytest.mark.parametrize("tokens, case", [(["SOCCER", "-", "JAPAN", "WIN"], "capitals"), (["ROME", "1996-12-06"], "capitals"),
                                          (["Nadim", "Ladki"], "normal"), (["U", "2"], "normal"), (["1-0", "."], "normal")])
def test_sentence_case(tokens, case):
    assert sentence_case(tokens) == case


def test_scheme_evidence():
    assert set(scheme_evidence(["I-PER", "I-PER", "B-PER"])) == {"iob1", "bio-end"}
    assert set(scheme_evidence(["B-PER", "I-PER", "O"])) == {"iob2", "bio-end"}
    assert set(scheme_evidence(["B-PER", "E-PER", "S-LOC"])) == {"iob2", "iobes"}


def _write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("EU B-ORG\nrejects O\n\nGerman\n", r"bad.conll: line 4 has a word \('German'\) but no tag column"),
    ("EU B-ORG\nrejects X-ORG\n", r"bad.conll: line 2: tag 'X-ORG' is not an entity tag"),
    ("EU B-ORG\nrejects O\n\nPeter I-PER\nBlackburn I-PER\n",
     r"bad.conll: line 4 uses IOB1 \(chunk opened by I-\) but line 1 uses IOB2 \(chunk opened by B-\)"),
    ("EU S-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n\n",
     r"bad.conll: line 5 uses IOB/BIO \(chunk closed without E-\) but line 1 uses IOBES"),
    ("\n\n", r"bad.conll: no tagged sentence found"),
])
def test_bad_conll_files_are_refused_naming_file_and_line(tmp_path, text, message):
    with pytest.raises(InputFileError, match=message):
        read_conll(_write(tmp_path / "bad.conll", text))


def _jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_jsonl_with_tag_ids_and_a_language_column(tmp_path):
    path = _jsonl(tmp_path / "ner.jsonl", [{"tokens": ["Ada", "Lovelace"], "ner_tags": [1, 2], "language": "en"},
                                           {"tokens": ["Abuja"], "ner_tags": [3], "language": "hau"}])
    frame = read_tagged_jsonl(path, "tokens", "ner_tags", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], ["language"])
    assert frame["tags"].tolist() == [["B-PER", "I-PER"], ["B-LOC"]]
    assert frame["language"].tolist() == ["en", "hau"] and frame["line"].tolist() == [1, 2]


@pytest.mark.parametrize("record, message", [
    ({"tokens": ["Ada", "Lovelace"], "ner_tags": ["B-PER"]}, r"ner.jsonl: line 2: 1 tags for 2 tokens"),
    ({"tokens": [], "ner_tags": []}, r"ner.jsonl: line 2: empty sentence"),
    ({"tokens": ["Ada"], "ner_tags": [7]}, r"ner.jsonl: line 2: tag id 7 is outside --data.label_names"),
    ({"tokens": ["Ada"]}, r"ner.jsonl: line 2 has no field 'ner_tags'"),
    ({"tokens": ["Ada"], "ner_tags": ["PER"]}, r"ner.jsonl: line 2: tag 'PER' is not an entity tag"),
    # a line holding an array was read as a record whose "fields" were its items ("has no field 'tokens'")
    (["Ada", "B-PER"], r"ner.jsonl: line 2 \(1-based\) is a JSON array, expected an object"),
])
def test_bad_jsonl_lines_are_refused_naming_file_and_line(tmp_path, record, message):
    path = _jsonl(tmp_path / "ner.jsonl", [{"tokens": ["Abuja"], "ner_tags": ["B-LOC"]}, record])
    with pytest.raises(InputFileError, match=message):
        read_tagged_jsonl(path, "tokens", "ner_tags", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], [])


def test_a_byte_order_mark_is_stripped_and_bad_bytes_are_named(tmp_path):
    """Issue 28: with a UTF-8 BOM, ``-DOCSTART-`` was read as a one-word sentence and every document group shifted
    by one; bytes that are not UTF-8 were a decoder traceback naming no file."""
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n-DOCSTART- -X- -X- O\n\nPeter NNP B-NP B-PER\n"
    plain = read_conll(_write(tmp_path / "plain.conll", text))
    path = tmp_path / "bom.conll"
    path.write_bytes("\ufeff".encode() + text.encode())
    with_bom = read_conll(path)
    assert len(with_bom) == 2 and list(with_bom["document"]) == list(plain["document"])
    latin1 = tmp_path / "latin1.conll"
    latin1.write_bytes(b"EU NNP B-NP B-ORG\n\nCaf\xe9 NNP B-NP B-ORG\n")
    with pytest.raises(ValueError, match=r"latin1.conll: line 3 \(1-based\) is not UTF-8 \(byte 0xe9\)"):
        read_conll(latin1)
