"""Model cards: every model directory lmshrink writes carries a Hugging Face ``README.md`` with its per-group results.

Three calls, made by whatever writes or measures a model (the modules, the Quantize callback, GroupMetrics,
``prune-generator``, the generative audit, the gate):

- :func:`start_card` when a model directory is written: how it was made and how to load it;
- :func:`add_measurement` when a run measures it: the per-group record of a split, perplexity, toxicity, the gate's
  verdict. A measurement taken on other weights than the directory's (checked by :func:`weights_digest`) is not
  put on its card;
- :func:`rebuild_card` (``lmshrink card DIR``): the card again from ``lmshrink_card.json`` and the run's records.

All of it is plain Python over JSON records and ``huggingface_hub``; nothing here knows Lightning.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmshrink.cards.digest import parameter_counts, weights_digest
from lmshrink.cards.record import (
    Kind,
    MeasurementKind,
    has_card_record,
    new_card_record,
    read_card_record,
    save_card_record,
    with_measurement,
)
from lmshrink.errors import InputFileError
from lmshrink.cards.render import BESIDE_FILE, CARD_FILE, MARKER, build_card, card_file, write_card

__all__ = ["BESIDE_FILE", "CARD_FILE", "MARKER", "add_measurement", "build_card", "card_file", "has_card_record",
           "parameter_counts", "rebuild_card", "start_card", "weights_digest"]


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmshrink")
    except PackageNotFoundError:  # a checkout on the path, not installed
        return "(not installed)"


def start_card(directory: str | Path, kind: Kind, made: dict, load: dict, digest: str | None = None,
               measurements: list[tuple[MeasurementKind, str | Path | None, dict]] = ()) -> Path:
    """Record how the model in ``directory`` was made (and any measurement already taken), and write its card."""
    record = new_card_record(kind, {"lmshrink_version": installed_version()} | made, load, digest)
    for kind_, source, data in measurements:
        record = with_measurement(record, kind_, source, data)
    save_card_record(directory, record)
    return write_card(record, directory)


def add_measurement(directory: str | Path | None, kind: MeasurementKind, source: str | Path | None, data: dict,
                    digest: str | None = None, variant: str | None = None) -> Path | None:
    """Put a measurement on the card of ``directory`` and rewrite the card; nothing when the directory has no
    lmshrink card record, or when ``digest`` (of the weights measured) is given and is not the directory's (None: the
    caller measured the directory's model itself, e.g. the Quantize callback its own save).
    Returns the card file written, or None."""
    if not has_card_record(directory):
        return None
    try:
        record = read_card_record(directory)
    except InputFileError as exc:  # a damaged card must not fail the run whose numbers are safe in its own records
        print(f"[lmshrink] warning: {exc}; the card of {directory} was not updated (this run's numbers are in its "
              f"own records)", file=sys.stderr, flush=True)
        return None
    if digest is not None and digest != record.get("digest"):
        return None
    record = with_measurement(record, kind, source, data, variant)
    save_card_record(directory, record)
    return write_card(record, directory)


def rebuild_card(directory: str | Path) -> Path:
    """The card of ``directory`` rebuilt from its ``lmshrink_card.json``, each measurement read again from the run's
    JSON record it came from where that file still exists."""
    from lmshrink.cards.sources import reread

    record = read_card_record(directory)
    for kind, entry in record["measurements"].items():
        if entry.get("source") and Path(entry["source"]).is_file():
            record = with_measurement(record, kind, entry["source"], reread(kind, entry["source"],
                                                                            entry.get("variant")), entry.get("variant"))
    save_card_record(directory, record)
    return write_card(record, directory)
