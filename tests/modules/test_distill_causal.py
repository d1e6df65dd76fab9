"""Token-level distillation of a causal LM (tiny random Llama, the SmolLM2 architecture) through the CLI."""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmshrink.cli import main
from lmshrink.distill.losses import soft_target_kl
from lmshrink.distill.next_token import next_token_nll
from lmshrink.modules import Distillation
from lmshrink.distill.options import StudentSource
from tests.helpers import REPO, group_record


def causal_args(model_dir, root, *extra):
    return ["--config", str(REPO / "configs" / "distill" / "smollm2_half.yaml"),
            f"--model.teacher_path={model_dir}", f"--data.tokenizer_path={model_dir}",
            "--model.student.num_layers=1", f"--model.student_save_dir={root / 'student'}",
            f"--trainer.default_root_dir={root}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir=.", "--trainer.max_steps=12", "--trainer.val_check_interval=6",
            "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--trainer.enable_progress_bar=false",
            "--model.learning_rate=3e-3", *extra]


def test_next_token_nll_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[True, True, False]])  # last position is padding: only position 0 -> token 1 counts
    assert next_token_nll(logits, ids, mask).tolist() == pytest.approx([-torch.log(torch.tensor(0.25)).item()])


@pytest.mark.slow
def test_causal_distillation_runs_learns_and_saves_a_generating_student(tiny_llama_dir, tmp_path):
    root = tmp_path / "run"
    before = Distillation(teacher_path=str(tiny_llama_dir), student=StudentSource(num_layers=1))
    assert before.is_causal_lm and before.reference_name is None
    from lmshrink.backbones import load_tokenizer
    from lmshrink.data.stereoset import load_stereoset_task

    texts = load_stereoset_task()["text"].tolist()[:8]  # text of the kind the run trains on
    ids = load_tokenizer(tiny_llama_dir)(texts, padding="max_length", truncation=True, max_length=12,
                                         return_tensors="pt")["input_ids"]
    with torch.no_grad():
        teacher_logits = before.teacher(input_ids=ids).logits
        initial = soft_target_kl(before.model.eval()(input_ids=ids).logits, teacher_logits, 1.0).item()
    main(["fit", *causal_args(tiny_llama_dir, root, "--model.loss_weights.ce=0")])
    student = AutoModelForCausalLM.from_pretrained(root / "student", local_files_only=True).eval()
    assert student.config.num_hidden_layers == 1
    with torch.no_grad():
        assert soft_target_kl(student(input_ids=ids).logits, teacher_logits, 1.0).item() < initial
    assert student.generate(ids[:, :4], max_new_tokens=3, do_sample=False).shape == (8, 7)
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"val/ppl", "val/teacher_ppl", "val/kd_loss", "test/ppl", "train/kd_loss"} <= logged
    with pytest.raises(AssertionError):
        group_record(root, "test")  # no per-group class accuracy for a generative student


def test_group_metrics_refuses_a_causal_run(tiny_llama_dir, tmp_path):
    with pytest.raises(ValueError, match="GroupMetrics measures classifiers.*remove GroupMetrics"):
        main(["fit", *causal_args(tiny_llama_dir, tmp_path / "run"),
              "--trainer.callbacks+=lmshrink.callbacks.GroupMetrics"])


def test_teacher_cache_is_refused_for_causal_teachers(tiny_llama_dir, tmp_path):
    with pytest.raises(ValueError, match="caching the per-token vocabulary logits of a causal LM teacher is not supported"):
        Distillation(teacher_path=str(tiny_llama_dir), student=StudentSource(num_layers=1), teacher_cache_dir=str(tmp_path))
