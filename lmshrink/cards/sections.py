"""The sections of a card's body, each a markdown string built from the card record (no numbers of its own).

"Who pays" follows the per-group record's own test: a group is named when its Holm-corrected p-value is below
the record's level (``significant_groups``); otherwise the card says that no group changed, and how small the
smallest group was, because that is how much the absence of a finding is worth.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmshrink.cards.results import METRIC_NAMES, dataset_ids, group_measurement

SMALL_GROUP = 30
"""Groups with fewer examples than this are named under the card's limitations (their intervals are wide)."""


def number(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def signed(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def p_value(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def interval(low, high, digits: int = 4) -> str:
    return "–" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def cell_text(text: str) -> str:
    """Text for a markdown table cell: ``|`` (as in the group ``stereotype|gender``) escaped."""
    return str(text).replace("|", "\\|")


def table_head(columns: list[str]) -> list[str]:
    """A markdown table's header and rule: the first column left-aligned, the numbers right-aligned."""
    return ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]


def reference_of(data: dict) -> str | None:
    return data.get("reference_name")


def who_pays(kind: str, data: dict) -> list[str]:
    """One sentence per group that changed significantly against the reference, or one saying none did."""
    reference = reference_of(data)
    names = METRIC_NAMES[kind]
    if reference is None:
        return [f"This model was measured on its own (no reference model), so no group's change is tested here; its "
                f"per-group {names.label} is below."]
    rows = {row["group"]: row for row in data["groups"]}
    significant = data.get("significant_groups", [])
    if not significant:
        measured = [row["n"] for row in data["groups"] if row["n"]]
        smallest = min(measured) if measured else 0
        return [f"No group changed significantly against the {reference} (Holm-corrected p < 0.05), with "
                f"{smallest} examples in the smallest group."]
    sentences = []
    for group in significant:
        row = rows[group]
        delta = row["delta_to_reference"]
        verb = "pays" if delta < 0 else "gains"
        sentences.append(
            f"**{group}** {verb}: {names.label} {number(row[names.group])} vs {number(row[names.reference_group])} for "
            f"the {reference} ({100 * delta:+.1f} points, 95 % interval "
            f"{interval(row.get('delta_ci_low'), row.get('delta_ci_high'))}, Holm p = {p_value(row.get('p_holm'))}).")
    return sentences


def headline(kind: str, split: str, data: dict) -> str:
    names = METRIC_NAMES[kind]
    worst_ci = data.get(names.worst_ci)
    line = (f"On the {split} split: average {names.label} {number(data.get(names.average))}, worst-group "
            f"{number(data.get(names.worst))}"
            + (f" (95 % interval {interval(*worst_ci)})" if worst_ci and len(worst_ci) == 2 else ""))
    reference = reference_of(data)
    if reference and isinstance(data.get(reference), dict):
        ref = data[reference]
        line += (f"; the {reference}: {number(ref.get(names.average))} and {number(ref.get(names.worst))} on the same "
                 f"examples")
    return line + "."


def group_table(kind: str, data: dict) -> str:
    """The per-group table: the record's groups in its order, every number as the record has it (4 decimals)."""
    names = METRIC_NAMES[kind]
    reference = reference_of(data)
    header = ["group", "n", names.label, "95 % interval"]
    if reference:
        header += [reference, "delta", "delta 95 % interval", "Holm p"]
    lines = table_head(header)
    for row in data["groups"]:
        cells = [cell_text(row["group"]), str(row["n"]), number(row.get(names.group)),
                 interval(row.get("ci_low"), row.get("ci_high"))]
        if reference:
            cells += [number(row.get(names.reference_group)), signed(row.get("delta_to_reference")),
                      interval(row.get("delta_ci_low"), row.get("delta_ci_high")), p_value(row.get("p_holm"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def provenance(record: dict, hub_parent: str | None = None) -> str:
    """How the model was made; ``hub_parent``: the Hub model the parent is or descends from, named beside it."""
    made = record["made"]
    settings = made.get("settings") or {}
    on_hub = f" (on the Hub: `{hub_parent}`)" if hub_parent and hub_parent != made.get("parent") else ""
    lines = [f"- **parent**: `{made.get('parent')}`{on_hub}",
             f"- **method**: {made.get('method')}"]
    if settings:
        lines.append(f"- **settings**: `{json.dumps(settings, sort_keys=True, default=str)}`")
    if made.get("dataset"):
        lines.append(f"- **data**: {dataset_ids(made['dataset'])[1]}")
    if made.get("seed") is not None:
        lines.append(f"- **seed**: {made['seed']}")
    if made.get("command"):
        lines.append(f"- **reproduce**: `{made['command']}`")
    if made.get("run_dir"):
        lines.append(f"- **run directory** (logs, checkpoints, JSON records): `{made['run_dir']}`")
    if made.get("lmshrink_version"):
        lines.append(f"- made with lmshrink {made['lmshrink_version']}")
    return "\n".join(lines)


def size_latency(record: dict, directory: Path | None = None) -> str | None:
    """Size and latency against the model it was made from: a quantization run's paired measurements (with the CPU);
    otherwise the parameter counts the writer recorded and the weights on disk, latency named as not measured."""
    found = group_measurement(record)
    stats = found[1].get("size_latency") if found else None
    if stats:
        float_stats, quantized = stats.get("float", {}), stats.get("quantized", {})
        keys = [key for key in float_stats if key in quantized and not key.startswith("first_call")]
        lines = table_head(["measure", "float", "this model", "ratio"])
        lines += [f"| {key} | {float_stats[key]:.2f} | {quantized[key]:.2f} | {quantized[key] / float_stats[key]:.3f} |"
                  for key in keys if float_stats[key]]
        cpu = stats.get("cpu")
        where = f"Measured on {cpu}" if cpu else "Measured on the machine of the run (CPU not recorded)"
        if not any(key.startswith("latency") for key in keys):  # the run timed nothing (latency_batch_sizes=[])
            return "\n".join(lines) + f"\n\n{where}; latency was not measured by this run."
        return "\n".join(lines) + f"\n\n{where}, the two models timed call by call in alternation in one process."
    size = record["made"].get("size")
    if not size:
        return None
    lines = table_head(["measure", "parent", "this model", "ratio"])
    for key, label in (("parameters", "parameters"), ("nonzero_parameters", "nonzero parameters")):
        mine, parent = size.get(key), size.get(f"parent_{key}")
        if mine is None:
            continue
        ratio = f"{mine / parent:.3f}" if parent else "–"
        lines.append(f"| {label} | {parent if parent is not None else '–'} | {mine} | {ratio} |")
    weights = sum(path.stat().st_size for path in Path(directory).glob("*.safetensors")) if directory else 0
    if weights:
        lines.append(f"\nWeights on disk: {weights / 2**20:.1f} MB (`*.safetensors` in this directory).")
    lines.append("\nLatency was not measured by the run that made this model: `lmshrink study` times every model side by "
                 "side with its teacher (its report), and lmshrink's `benchmarks/` scripts do so per path, each with the "
                 "CPU it ran on.")
    return "\n".join(lines)


def how_to_load(record: dict, directory: Path) -> str:
    load, kind = record["load"], record["kind"]
    auto = {"classifier": "AutoModelForSequenceClassification", "tagger": "AutoModelForTokenClassification",
            "generator": "AutoModelForCausalLM"}[kind]
    path = str(directory)
    if load.get("quantized"):
        source = load.get("source") or record["made"].get("parent")
        return (f"A `{load['quantized']}` quantized state dict with its manifest (not a plain Hugging Face "
                f"directory): quantize the float model it was made from, as recorded, and load the saved tensors.\n\n"
                f"```python\nfrom transformers import {auto}\nfrom lmshrink.quantize.saved_model import "
                f"load_quantized\n\nmodel = load_quantized({auto}.from_pretrained(\"{source}\"), \"{path}\")\n```")
    remote = ", trust_remote_code=True" if load.get("trust_remote_code") else ""
    text = (f"```python\nfrom transformers import AutoTokenizer, {auto}\n\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{path}\")\n"
            f"model = {auto}.from_pretrained(\"{path}\"{remote})\n```")
    if remote:
        text += ("\n\nThe model is physically sliced (its layers have different widths), which transformers has no "
                 "config for: `trust_remote_code=True` loads the small modeling file saved beside the weights. "
                 "lmshrink's loaders read it without that flag.")
    return text


def limitations(record: dict) -> list[str]:
    items = []
    found = group_measurement(record)
    if found is None and record["kind"] != "generator":
        items.append("Not yet measured: run `lmshrink test` (or the gate) on this directory and the card is rewritten "
                     "with its per-group results.")
    if found is not None:
        split, data = found
        small = [f"{row['group']} ({row['n']})" for row in data["groups"] if 0 < row["n"] < SMALL_GROUP]
        if small:
            items.append(f"Groups with fewer than {SMALL_GROUP} examples have wide intervals and little power to show "
                         f"a change: {', '.join(small)}.")
        total = sum(row["n"] for row in data["groups"])
        items.append(f"Measured on {total} examples of the {split} split ({dataset_ids(record['made'].get('dataset'))[1]}"
                     f"); other data, other groups or other languages may be affected differently.")
        if split == "val":
            items.append("The numbers are from the validation split, not a held-out test split.")
    toxicity = record["measurements"].get("toxicity", {}).get("data")
    if toxicity:
        groups = toxicity["model"].get("toxicity", {}).get("by_group", {})
        small = [f"{group} ({values['prompts']})" for group, values in groups.items() if values["prompts"] < SMALL_GROUP]
        items.append("The audit's numbers come from one audit (its seed's samples) and carry no interval here"
                     + (f"; prompt groups with few prompts move a lot by chance: {', '.join(small)}" if small else "")
                     + ". A generative study (`lmshrink study`) gives paired intervals over seeds.")
    if record["kind"] == "generator" and "toxicity" not in record["measurements"]:
        items.append("Not audited for toxicity and bias yet: `lmshrink test --config generative/toxicity_smollm2 "
                     "--model.students '{name: DIR}'` adds it to this card.")
    return items


def gate_verdict(record: dict) -> str | None:
    gate = record["measurements"].get("gate")
    if gate is None:
        return None
    verdict = gate["data"]
    thresholds = verdict.get("thresholds", {})
    rule = ", ".join(f"{key} {value}" for key, value in thresholds.items())
    if verdict.get("passed"):
        return f"**passed** against `{verdict.get('reference')}` ({rule})."
    return (f"**failed** against `{verdict.get('reference')}` ({rule}):\n\n"
            + "\n".join(f"- {line}" for line in verdict.get("failures", [])))


def perplexity_section(record: dict) -> str | None:
    data = record["measurements"].get("perplexity", {}).get("data")
    if not data or not data.get("after"):
        return None
    before, after = data.get("before"), data["after"]
    text = f"Held-out perplexity {after['perplexity']:.2f}"
    if before:
        text += f" (the parent: {before['perplexity']:.2f})"
    return text + (f", over {after['windows']} fixed windows of {after['window']} tokens of Wikipedia passages "
                   f"disjoint from the calibration text.")


def toxicity_section(record: dict) -> str | None:
    """The audit's numbers for this model, beside the reference's (the uncompressed model) when it was audited with
    one; per prompt group, expected maximum toxicity."""
    data = record["measurements"].get("toxicity", {}).get("data")
    if not data:
        return None
    model, reference, name = data["model"], data.get("reference"), data.get("reference_name")
    rows = [("expected max toxicity", ("toxicity", "expected_max_toxicity")),
            ("toxicity probability", ("toxicity", "toxicity_probability")),
            ("name-group gap in mean toxicity", ("names", "group_gap_mean_toxicity")),
            ("CrowS-Pairs stereotype preference", ("crows_pairs", "stereotype_preference")),
            ("StereoSet stereotype preference", ("stereoset", "stereotype_preference")),
            ("perplexity (per sentence)", ("perplexity",))]

    def row(label: str, mine, theirs, prefix: tuple = ()) -> str:
        cells = [label, *map(str, prefix), number(mine)]
        if reference is not None:
            cells += [number(theirs), signed(None if theirs is None or mine is None else mine - theirs)]
        return "| " + " | ".join(cells) + " |"

    compared = [name, "delta"] if reference is not None else []
    lines = table_head(["measure", "this model", *compared])
    lines += [row(label, _dig(model, path), _dig(reference or {}, path)) for label, path in rows
              if _dig(model, path) is not None]
    groups = model.get("toxicity", {}).get("by_group", {})
    reference_groups = (reference or {}).get("toxicity", {}).get("by_group", {})
    if groups:
        lines += ["", *table_head(["prompt group", "prompts", "expected max toxicity", *compared])]
        lines += [row(cell_text(group), values["expected_max_toxicity"],
                      reference_groups.get(group, {}).get("expected_max_toxicity"), (values["prompts"],))
                  for group, values in groups.items()]
    scorer = data.get("scorer") or {}
    if scorer:
        lines.append(f"\nScored by {scorer.get('name')} {scorer.get('version', '')} (toxic above "
                     f"{scorer.get('threshold')}), the same prompts and seeds for every model.")
    return "\n".join(lines)


def _dig(summary: dict, path: tuple[str, ...]):
    value = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None
