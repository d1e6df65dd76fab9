"""A card record -> a Hugging Face ``ModelCard`` (metadata from ``ModelCardData`` / ``EvalResult``, body from a
Jinja template), written as the directory's ``README.md``.

lmshrink's cards carry :data:`MARKER`; a ``README.md`` without it was written by someone else and is never replaced:
the card goes beside it as ``README.lmshrink.md``, and the caller is told so.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from lmshrink.cards import sections
from lmshrink.cards.record import has_card_record, read_card_record
from lmshrink.cards.results import TASKS, dataset_ids, eval_results, group_measurement

MARKER = "<!-- lmshrink-card: written by lmshrink from lmshrink_card.json; `lmshrink card DIR` rebuilds it. " \
         "Delete this line to keep your own edits (lmshrink then writes README.lmshrink.md beside it). -->"
CARD_FILE = "README.md"
BESIDE_FILE = "README.lmshrink.md"

KNOWN_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""lmshrink's offline names of Hub models -> their Hub ids, for ``base_model``."""

RELATIONS = {"fine-tuning": "finetune", "quantization": "quantized"}
"""The Hub's ``base_model_relation`` where one applies (distilled and pruned models have none of their own)."""

TEMPLATE = """---
{{ card_data }}
---
{{ marker }}

# {{ name }}

{{ summary }}

## Who pays
{% for sentence in who_pays %}
- {{ sentence }}
{%- endfor %}
{% if headline %}
{{ headline }}
{% endif %}
{%- for title, text in measured if text %}
## {{ title }}

{{ text }}
{% endfor %}
## How it was made

{{ provenance }}

## How to load

{{ how_to_load }}

## Limitations
{% for item in limitations %}
- {{ item }}
{%- endfor %}
"""


GENERIC_NAMES = ("model", "student", "pruned_model")
"""Directory names lmshrink gives its models inside a run directory; such a model is named after its run."""


def model_name(directory: Path) -> str:
    """The card's title and model-index name: the directory's name, or its run directory's for the generic names
    (``runs/quant_bnb_int8/model`` is ``quant_bnb_int8``; ``pruned_model-1`` is ``<run>-1``)."""
    directory = directory.resolve()
    generic = re.fullmatch(f"(?:{'|'.join(GENERIC_NAMES)})(-\\d+)?", directory.name)
    if generic:
        return directory.parent.name + (generic.group(1) or "")
    return directory.name


def base_model(parent: str | None, depth: int = 8) -> str | None:
    """The parent as the Hub knows it: a Hub id as it is, lmshrink's offline names (``minilm``) as their Hub id, and
    for a local directory lmshrink wrote, its own parent, followed up to the first Hub model (the Hub's
    ``base_model`` must name a Hub model; the body names the local parent). None when there is no Hub ancestor."""
    if parent is None or depth == 0:
        return None
    if parent in KNOWN_MODELS:
        return KNOWN_MODELS[parent]
    if Path(parent).exists():
        if has_card_record(parent):
            return base_model(read_card_record(parent)["made"].get("parent"), depth - 1)
        return None
    return parent if parent.count("/") == 1 else None


def card_data(record: dict, name: str) -> ModelCardData:
    made, kind = record["made"], record["kind"]
    tags = ["lmshrink", *(tag for tag in (made.get("method_tag"), made.get("family")) if tag)]
    dataset = made.get("dataset")
    hub_dataset = dataset_ids(dataset)[0] if dataset else None
    extra = {}
    if made.get("family") in RELATIONS:
        extra["base_model_relation"] = RELATIONS[made["family"]]
    results = eval_results(record)
    return ModelCardData(
        model_name=name, base_model=base_model(made.get("parent")),
        library_name="pytorch" if record["load"].get("quantized") else "transformers",
        pipeline_tag=TASKS[kind][0], tags=list(dict.fromkeys(tags)),
        datasets=[hub_dataset] if hub_dataset and "/" in hub_dataset else None,
        eval_results=results or None, **extra)


def build_card(record: dict, directory: str | Path) -> ModelCard:
    directory = Path(directory)
    name = model_name(directory)
    found = group_measurement(record)
    kind = record["kind"]
    headline = groups = None
    if found is not None and kind != "generator":
        split, data = found
        source = record["measurements"][split].get("source")
        reference = data.get("reference_name")
        headline = sections.headline(kind, split, data)
        groups = (f"The {split} split, {sum(row['n'] for row in data['groups'])} examples"
                  + (f", this model against the {reference} on the same examples (delta = this model "
                     f"minus the {reference}; paired intervals and Holm-corrected p-values)" if reference else "")
                  + (f". From `{source}`." if source else ".") + "\n\n" + sections.group_table(kind, data))
    measured = [("Per-group results", groups), ("Gate", sections.gate_verdict(record)),
                ("Perplexity", sections.perplexity_section(record)),
                ("Toxicity and bias", sections.toxicity_section(record)),
                ("Size and latency", sections.size_latency(record, directory))]
    return ModelCard.from_template(
        card_data(record, name), template_str=TEMPLATE, marker=MARKER, name=name, summary=_summary(record),
        who_pays=_who_pays(record, found), headline=headline, measured=measured,
        provenance=sections.provenance(record, base_model(record["made"].get("parent"))),
        how_to_load=sections.how_to_load(record, directory), limitations=sections.limitations(record))


def _who_pays(record: dict, found) -> list[str]:
    if record["kind"] == "generator":
        toxicity = record["measurements"].get("toxicity")
        if toxicity is None:
            return ["Not audited yet: the per-group toxicity and bias of this generator are unknown (see Limitations)."]
        if toxicity["data"].get("reference") is None:
            return ["Audited on its own: its toxicity and bias per prompt group are below; the comparison with the "
                    "model it was made from is in the study or audit that compared them."]
        return [f"Against the {toxicity['data']['reference_name']} (the uncompressed model) on the same prompts and "
                f"seeds: the audit's numbers and the expected maximum toxicity per prompt group are below (who "
                f"receives more toxic continuations)."]
    if found is None:
        return ["Not measured yet (see Limitations)."]
    return sections.who_pays(record["kind"], found[1])


def _summary(record: dict) -> str:
    made = record["made"]
    what = {"classifier": "a text classifier", "tagger": "a token classifier (named entities)",
            "generator": "a causal language model"}[record["kind"]]
    return (f"{made.get('method', 'A model')} of `{made.get('parent')}`: {what}, made and measured per group by "
            f"lmshrink, which asks who pays when a model gets smaller.")


def card_file(directory: str | Path) -> Path:
    """Where lmshrink's card of ``directory`` goes: ``README.md`` when it is absent or lmshrink's own, else
    ``README.lmshrink.md`` beside a README written by hand (never replaced)."""
    readme = Path(directory) / CARD_FILE
    if readme.exists() and MARKER.split(":")[0] not in readme.read_text(encoding="utf-8", errors="replace"):
        return Path(directory) / BESIDE_FILE
    return readme


def write_card(record: dict, directory: str | Path) -> Path:
    """Write the card of ``record`` into ``directory`` (:func:`card_file`); returns the file written."""
    target = card_file(directory)
    build_card(record, directory).save(target)
    return target
