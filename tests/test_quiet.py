"""The entry points' output filters: installed once however often they are asked for."""

from __future__ import annotations

import logging

import pytest

from lmshrink.quiet import quiet_third_party


def test_quiet_third_party_adds_one_lightning_filter_however_often_it_is_called():
    for _ in range(3):
        quiet_third_party()
    filters = logging.getLogger("lightning.pytorch.utilities.rank_zero").filters
    assert sum(type(existing).__name__ == "_DropLines" for existing in filters) == 1


@pytest.mark.slow
def test_the_gate_starts_as_quietly_as_train_py(tiny_bert_varied_dir, tmp_path):
    """``python -m lmshrink.gate`` as a real process (issue 28: it printed Lightning's GPU/TPU lines and tip, W&B's
    git warning and the LeafSpec deprecation before its table): none of that noise, and its verdict last."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    args = ["--reference", str(tiny_bert_varied_dir), "--candidate", str(tiny_bert_varied_dir), "--config",
            str(REPO / "configs/teacher/stereoset_minilm.yaml"), "--output-dir", str(tmp_path / "gate"), "--",
            f"--data.tokenizer_path={tiny_bert_varied_dir}", "--trainer.enable_progress_bar=false",
            "--data.eval_batch_size=512"]
    proc = subprocess.run([sys.executable, "-m", "lmshrink.gate", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    noise = ("GPU available", "TPU available", "Tip:", "git root", "LeafSpec", "Failed to load", "_pytree",
             "Traceback", "Warning")
    assert not [line for line in output.splitlines() if any(word in line for word in noise)], output
    assert proc.stdout.strip().splitlines()[-1].startswith("gate passed")
