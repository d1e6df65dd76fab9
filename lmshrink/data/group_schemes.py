"""Which subgroup each example belongs to: the generic label x columns product, and named definitions.

Membership is a boolean matrix ``[rows, groups]`` so that overlapping groups (WILDS CivilComments: one
comment mentions several identities) and disjoint ones (label x attribute) share one code path.

Named schemes reproduce the group definitions of the papers lmshrink is compared against, on the real
column formats of the public releases:

- ``civilcomments``: Idrissi et al. 2022 / Koh et al. 2021 setup used by the subgroup-robustness
  literature: label ``toxicity >= 0.5`` x ``identity_any`` (any of 8 identity scores >= 0.5): 4 groups.
- ``civilcomments_wilds``: WILDS evaluation groups: label x each of 8 identities, 16 overlapping groups.
- ``multinli``: Sagawa et al. 2020 (Group DRO): label x ``sentence2`` contains a negation word, 6 groups.
- ``scotus``: FairLex (Chalkidis et al. 2022): issue-area label x ``decision_direction``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from lmshrink.errors import InputFileError

CIVILCOMMENTS_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
NEGATION_WORDS = frozenset({"no", "never", "nobody", "nothing"})
MNLI_LABELS = ("entailment", "neutral", "contradiction")
SCOTUS_ISSUE_AREAS = 14


@dataclass(frozen=True)
class GroupScheme:
    """Column roles and group definition of a named benchmark."""

    name: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    num_labels: int
    label_names: tuple[str, ...] | None = None
    label_threshold: float | None = None
    attribute_columns: tuple[str, ...] = field(default_factory=tuple)
    """Columns the group definition reads (besides the label)."""


def check_group_values(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    """A missing group value would put a row in no group (or a 'nan' group): refuse it, naming the row."""
    for column in columns:
        values = frame[column]
        bad = values.isna() | values.map(lambda value: isinstance(value, str) and value.strip() == "")
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise InputFileError(f"{source}: group column {column!r} row {row + 1} (1-based) is empty; every row "
                                 f"needs a group value")


def label_x_columns(
    frame: pd.DataFrame, labels: np.ndarray, label_names: list[str], columns: list[str], include_label: bool = True
) -> tuple[list[str], np.ndarray]:
    """Disjoint groups: every observed combination of (label, column values), named ``label|v1|v2``.

    Groups are sorted by label id then values, so every rank and every split gets the same group ids.
    """
    parts = [np.asarray(label_names, dtype=object)[labels]] if include_label else []
    parts += [frame[column].astype(str).to_numpy(dtype=object) for column in columns]
    if not parts:
        raise ValueError("no group definition: set group_columns, group_scheme, or groups_include_label")
    keys = ["|".join(values) for values in zip(*parts)]
    order = {}
    for label, key in sorted(zip(labels.tolist() if include_label else [0] * len(keys), keys)):
        order.setdefault(key, len(order))
    names = list(order)
    ids = np.fromiter((order[key] for key in keys), dtype=np.int64, count=len(keys))
    return names, np.eye(len(names), dtype=bool)[ids]


def _declared_product(label_names: list[str], attribute: np.ndarray, attribute_values: list, labels: np.ndarray, attr_name: str):
    names, columns = [], []
    for label_id, value in itertools.product(range(len(label_names)), attribute_values):
        names.append(f"{label_names[label_id]}|{attr_name}={value}")
        columns.append((labels == label_id) & (attribute == value))
    return names, np.stack(columns, axis=1)


def scheme_membership(scheme: GroupScheme, frame: pd.DataFrame, labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Declared groups of a named scheme (all of them, so that an empty one can be detected)."""
    label_names = list(scheme.label_names or [str(i) for i in range(scheme.num_labels)])
    if scheme.name == "civilcomments":
        identity_any = (frame[list(CIVILCOMMENTS_IDENTITIES)].astype(float).to_numpy() >= 0.5).any(axis=1).astype(int)
        return _declared_product(label_names, identity_any, [0, 1], labels, "identity_any")
    if scheme.name == "civilcomments_wilds":
        names, columns = [], []
        for identity in CIVILCOMMENTS_IDENTITIES:
            mentioned = frame[identity].astype(float).to_numpy() >= 0.5
            for label_id, label_name in enumerate(label_names):
                names.append(f"{label_name}|{identity}")
                columns.append(mentioned & (labels == label_id))
        return names, np.stack(columns, axis=1)
    if scheme.name == "multinli":
        has_negation = frame["sentence2"].map(lambda text: bool(NEGATION_WORDS & set(re.findall(r"[a-z]+", text.lower()))))
        return _declared_product(label_names, has_negation.to_numpy().astype(int), [0, 1], labels, "negation")
    if scheme.name == "scotus":
        direction = pd.to_numeric(frame["decision_direction"]).to_numpy()
        return _declared_product(label_names, direction, [0, 1], labels, "direction")
    raise KeyError(scheme.name)


GROUP_SCHEMES = {
    scheme.name: scheme
    for scheme in [
        GroupScheme(
            "civilcomments", "comment_text", None, "toxicity", 2,
            label_names=("nontoxic", "toxic"), label_threshold=0.5, attribute_columns=CIVILCOMMENTS_IDENTITIES,
        ),
        GroupScheme(
            "civilcomments_wilds", "comment_text", None, "toxicity", 2,
            label_names=("nontoxic", "toxic"), label_threshold=0.5, attribute_columns=CIVILCOMMENTS_IDENTITIES,
        ),
        GroupScheme(
            "multinli", "sentence1", "sentence2", "gold_label", 3,
            label_names=MNLI_LABELS, attribute_columns=("sentence2",),
        ),
        GroupScheme(
            "scotus", "text", None, "label", SCOTUS_ISSUE_AREAS, attribute_columns=("decision_direction",),
        ),
    ]
}

GroupSchemeName = Literal["civilcomments", "civilcomments_wilds", "multinli", "scotus"]
"""The named group definitions as a type: ``--help`` lists them and a typo fails when the command line is parsed."""
assert set(get_args(GroupSchemeName)) == set(GROUP_SCHEMES), "GroupSchemeName and GROUP_SCHEMES disagree"
