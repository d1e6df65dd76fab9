"""Entity spans of a tag sequence by the CoNLL evaluation rules (conlleval.pl; seqeval's default mode).

A span is ``(type, first, last)`` (word positions, inclusive). The rules read IOB1, IOB2/BIO and IOBES alike: a
chunk opens at ``B-``/``S-``, at ``I-``/``E-`` after ``O`` or after a chunk of another type, or after a closed
``E-``/``S-``; it closes before ``O``, ``B-``, ``S-``, a type change, or after ``E-``/``S-``. Entity precision,
recall and F1 count exact span matches (type and both ends), as CoNLL-2003 and MasakhaNER report them.
"""

from __future__ import annotations


def _split(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def _ends(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    prev_prefix, prev_type = previous
    prefix, kind = current
    if prev_prefix in "ES":
        return True
    if prev_prefix in "BI" and prefix in "BSO":
        return True
    return prev_prefix != "O" and prev_type != kind


def _starts(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    prev_prefix, prev_type = previous
    prefix, kind = current
    if prefix in "BS":
        return True
    if prefix in "IE" and prev_prefix in "ESO":
        return True
    return prefix != "O" and prev_type != kind


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """The set of ``(type, first, last)`` spans in one sentence's tags."""
    spans, previous, begin = set(), ("O", ""), 0
    for position, tag in enumerate(list(tags) + ["O"]):
        current = _split(tag)
        if _ends(previous, current):
            spans.add((previous[1], begin, position - 1))
        if _starts(previous, current):
            begin = position
        previous = current
    return spans


def entity_types(tag_names: list[str]) -> list[str]:
    """The entity types of a tag set, sorted (``["LOC", "MISC", "ORG", "PER"]`` for CoNLL-2003)."""
    return sorted({tag[2:] for tag in tag_names if tag != "O"})
