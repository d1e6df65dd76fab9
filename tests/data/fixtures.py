"""Small synthetic tables in the real column formats of the benchmarks lmshrink names.

Column names follow the public releases: WILDS ``all_data_with_identities.csv`` (CivilComments),
the MultiNLI jsonl (``sentence1``, ``sentence2``, ``gold_label``), FairLex SCOTUS (``text``, ``label``,
``decision_direction``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from lmshrink.data.group_schemes import CIVILCOMMENTS_IDENTITIES


def civilcomments_frame(rows_per_cell: int = 6) -> pd.DataFrame:
    records = []
    for i, (toxic, identity) in enumerate(itertools.product([0, 1], [None, *CIVILCOMMENTS_IDENTITIES])):
        for j in range(rows_per_cell):
            record = {
                "id": i * 100 + j,
                "comment_text": f"comment {i} {j} {'awful' if toxic else 'fine'} {identity or 'nobody'}",
                "toxicity": 0.8 if toxic else 0.1,
                "split": ["train", "train", "train", "train", "val", "test"][j % 6],
            }
            for name in CIVILCOMMENTS_IDENTITIES:
                record[name] = 0.9 if name == identity else 0.0
            records.append(record)
    return pd.DataFrame(records)


def multinli_frame(rows_per_cell: int = 5) -> pd.DataFrame:
    records = []
    for label, negated in itertools.product(["entailment", "neutral", "contradiction"], [False, True]):
        for j in range(rows_per_cell):
            hypothesis = f"the {label} cat {'never' if negated else 'often'} sleeps {j}"
            records.append({"sentence1": f"a premise about cats {j}", "sentence2": hypothesis, "gold_label": label})
    return pd.DataFrame(records)


def scotus_frame(rows_per_cell: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": f"case {label} {direction} {j}", "label": label, "decision_direction": direction}
        for label in range(14) for direction in (0, 1) for j in range(rows_per_cell)
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path
