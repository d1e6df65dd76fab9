"""Toxicity scorers that run offline. Every scorer has a ``name`` and ``version``, logged next to its numbers,
since toxicity figures from different scorers are not comparable.

- ``profanity`` (default): ``alt-profanity-check``, a linear SVM on bag-of-words shipped on PyPI. Fast, offline,
  and blind to toxicity without profane words (it measures profanity, not Perspective's toxicity).
- a local Hugging Face sequence classifier directory (e.g. a toxicity model you downloaded beforehand): the
  probability of its ``toxic_label``.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch


class ProfanityScorer:
    name = "alt-profanity-check"

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict = predict_prob
        self.version = version("alt-profanity-check")

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0)
        return torch.as_tensor(self._predict(texts), dtype=torch.float32)


class ClassifierScorer:
    """Probability of ``toxic_label`` from a local HF sequence classifier (offline; nothing is downloaded)."""

    def __init__(self, path: str, toxic_label: str | int = 1, batch_size: int = 64) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        directory = Path(path).expanduser()
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"toxicity scorer {path!r}: not a local model directory (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
        labels = self.model.config.id2label
        if isinstance(toxic_label, str):
            matches = [index for index, label in labels.items() if label == toxic_label]
            if not matches:
                raise ValueError(f"toxicity scorer {path!r} has no label {toxic_label!r}; labels: {labels}")
            toxic_label = matches[0]
        self.toxic_index = int(toxic_label)
        self.batch_size = batch_size
        self.name = f"classifier:{directory.name}"
        self.version = getattr(self.model.config, "_name_or_path", str(directory))

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=128)
            scores.append(self.model(**batch).logits.softmax(-1)[:, self.toxic_index])
        return torch.cat(scores) if scores else torch.zeros(0)


def build_scorer(spec: str):
    """``profanity`` or a local classifier directory (optionally ``path::label``)."""
    if spec == "profanity":
        return ProfanityScorer()
    path, _, label = spec.partition("::")
    return ClassifierScorer(path, label or 1)
