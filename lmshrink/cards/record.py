"""``lmshrink_card.json``: what a model directory's card states, kept beside the weights.

The card (``README.md``) is rendered from this record and nothing else, so ``lmshrink card DIR`` can rebuild it at
any time. The record holds how the model was made (``made``: parent, method, settings, seed, the config that
reproduces it), how to load it (``load``) and its measurements, one per kind (the per-group table of the split,
held-out perplexity, toxicity, size and latency, the gate's verdict), each with the run's JSON file it was read
from (``source``): a rebuild reads that file again where it still exists, and the copy kept here where it does not
(a model directory copied away from its run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

RECORD_FILE = "lmshrink_card.json"
FORMAT = "lmshrink-card/1"

Kind = Literal["classifier", "tagger", "generator"]
MeasurementKind = Literal["val", "test", "perplexity", "toxicity", "gate"]
"""``val`` / ``test``: a per-group record (``group_metrics_<stage>.json`` or ``quantization_<scheme>_<stage>.json``);
``perplexity``: held-out perplexity before / after (``pruning_record.json`` of ``prune-generator``); ``toxicity``:
one model of a generative audit (``generative_audit.json``); ``gate``: the gate's verdict (``gate.json``)."""


def record_path(directory: str | Path) -> Path:
    return Path(directory) / RECORD_FILE


def has_card_record(directory: str | Path | None) -> bool:
    """True for a model directory lmshrink wrote (it holds ``lmshrink_card.json``)."""
    return directory is not None and record_path(directory).is_file()


def read_card_record(directory: str | Path) -> dict:
    from lmshrink.data.text_files import read_json
    from lmshrink.errors import InputFileError, MissingInputError

    path = record_path(directory)
    if not path.is_file():
        inside = sorted(str(found.parent) for found in Path(directory).glob(f"*/{RECORD_FILE}")) \
            if Path(directory).is_dir() else []
        hint = f"; the model directories in it: {', '.join(inside)}" if inside else ""
        raise MissingInputError(f"{directory}: no {RECORD_FILE}, so not a model directory lmshrink wrote (nothing to "
                                f"build a card from){hint}")
    record = read_json(path)
    if record.get("format") != FORMAT:
        raise InputFileError(f"{path}: format {record.get('format')!r} is not {FORMAT!r}")
    return record


def new_card_record(kind: Kind, made: dict, load: dict, digest: str | None = None) -> dict:
    """The record of a model just written: ``made`` = {parent, method, method_tag, settings, seed, config, command,
    dataset, ...}; ``load`` = {trust_remote_code, quantized (scheme or None), source (float model of a quantized
    one)}; ``digest``: :func:`lmshrink.cards.digest.weights_digest` of the weights written, which a later
    measurement must match to be put on the card."""
    return {"format": FORMAT, "kind": kind, "made": made, "load": load, "digest": digest, "measurements": {}}


def save_card_record(directory: str | Path, record: dict) -> None:
    record_path(directory).write_text(json.dumps(record, indent=2, default=str))


def with_measurement(record: dict, kind: MeasurementKind, source: str | Path | None, data: dict,
                     variant: str | None = None) -> dict:
    """``record`` with the measurement of ``kind`` replaced by this one (the newest measurement wins)."""
    entry = {"source": None if source is None else str(source), "data": data}
    if variant is not None:
        entry["variant"] = variant
    return record | {"measurements": record["measurements"] | {kind: entry}}
