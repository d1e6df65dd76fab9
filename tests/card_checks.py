"""Checks of a model card against the run's JSON records, read the way a Hub user's tools read it: the card through
``huggingface_hub.ModelCard.load`` and its ``model-index`` through ``huggingface_hub``'s eval-result parsing."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

HEADLINE_KEYS = {
    "classifier": {"accuracy": "avg_acc", "worst_group_accuracy": "worst_group_acc"},
    "tagger": {"f1": "f1", "worst_group_f1": "worst_group_f1"},
}
"""model-index metric type -> the key of the same number in a per-group record."""

GROUP_KEYS = {"classifier": ("accuracy", "reference_accuracy"), "tagger": ("f1", "reference_f1")}


def load_card(directory: Path) -> tuple[ModelCard, dict]:
    card = ModelCard.load(Path(directory) / "README.md")
    return card, json.loads((Path(directory) / "lmshrink_card.json").read_text())


def model_index_values(card: ModelCard) -> tuple[str, dict[str, float], list]:
    """(model name, {metric type: value}, the parsed EvalResults) of the card's model-index."""
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    return name, {result.metric_type: result.metric_value for result in results}, results


def table_rows(card: ModelCard, heading: str = "## Per-group results") -> list[list[str]]:
    """The cells of the first markdown table under ``heading`` (header and rule left out, ``\\|`` unescaped)."""
    table = []
    for line in card.text.split(heading, 1)[1].splitlines()[1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    cells = [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    return cells[2:]


def parsed(cell: str):
    if cell == "–":
        return None
    if cell.startswith("["):
        return [float(value) for value in cell.strip("[]").split(",")]
    return float(cell)


def close(a, b, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and (b is None or (isinstance(b, float) and math.isnan(b)))
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b))
    return abs(a - b) <= tolerance


def assert_card_reports(directory: Path, record: dict, split: str = "test") -> ModelCard:
    """The card of ``directory`` loads, names this split, its model-index parses back to ``record``'s headline
    numbers exactly, and its per-group table is ``record``'s groups (to the 4 decimals shown; p to 3 digits)."""
    card, card_record = load_card(directory)
    kind = card_record["kind"]
    name, values, results = model_index_values(card)
    directory = Path(directory).resolve()
    assert name == (directory.parent.name if directory.name in ("model", "student", "pruned_model") else directory.name)
    assert card.text.split("\n# ", 1)[1].startswith(f"{name}\n")
    assert values == {metric: record[key] for metric, key in HEADLINE_KEYS[kind].items()}
    assert {result.dataset_split for result in results} == {split}
    value_key, reference_key = GROUP_KEYS[kind]
    rows = table_rows(card)
    assert [row[0] for row in rows] == [group["group"] for group in record["groups"]]
    for row, group in zip(rows, record["groups"]):
        expected = [group["n"], group[value_key], [group.get("ci_low"), group.get("ci_high")]]
        if record.get("reference_name"):
            expected += [group[reference_key], group["delta_to_reference"],
                         [group.get("delta_ci_low"), group.get("delta_ci_high")]]
        got = [parsed(cell) for cell in row[1:len(expected) + 1]]
        for got_value, want in zip(got, expected):
            if isinstance(want, list) and want[0] is None:
                assert got_value is None, (group["group"], row)
            else:
                assert close(got_value, want, 5.1e-5), (group["group"], got_value, want)
        if record.get("reference_name"):
            p = parsed(row[-1])
            want_p = group.get("p_holm")
            assert (p is None and want_p is None) or abs(p - want_p) <= 5e-3 * max(want_p, 1e-12), (group["group"], p)
    return card
