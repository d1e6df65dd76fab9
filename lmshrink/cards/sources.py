"""The measurement a card keeps, read from each kind of run record (the same code when a run writes the card and
when ``lmshrink card DIR`` rebuilds it)."""

from __future__ import annotations

from pathlib import Path

def perplexity_from_pruning_record(record: dict) -> dict:
    """``prune-generator``'s ``pruning_record.json`` -> held-out perplexity before and after pruning."""
    return {"before": record.get("heldout_before"), "after": record.get("heldout_after")}


def toxicity_from_audit(audit: dict, variant: str) -> dict:
    """``generative_audit.json`` -> one model's summary beside the reference's (the audit's ``reference``, the
    uncompressed model), with the scorer."""
    reference = audit["reference"]
    if variant == reference:  # the audited model itself (a study audits each model alone): no comparison here
        return {"model": audit["models"][variant], "reference": None, "reference_name": None,
                "scorer": audit.get("scorer")}
    return {"model": audit["models"][variant], "reference": audit["models"].get(reference),
            "reference_name": reference, "scorer": audit.get("scorer")}


def reread(kind: str, source: str | Path, variant: str | None = None) -> dict:
    """The measurement of ``kind`` from the run record at ``source``."""
    from lmshrink.data.text_files import read_json

    record = read_json(source)
    if kind == "perplexity":
        return perplexity_from_pruning_record(record)
    if kind == "toxicity":
        return toxicity_from_audit(record, variant)
    return record  # val / test (group_metrics_*.json, quantization_*_*.json) and gate (gate.json) are kept whole
