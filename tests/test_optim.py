"""The one optimizer set-up of the training modules: the default recipe against transformers' own schedule, and
an optimizer / schedule injected from the command line reaching the trainer. (Default-optimizer options beside an
injected one are refused: tests/test_user_mistakes.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from lmshrink.cli import main
from lmshrink.optim import LinearWarmupDecay, configure_optimization, parameter_groups
from tests.helpers import tiny_run_args


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(4, 4)
        self.LayerNorm = nn.LayerNorm(4)


def test_default_is_adamw_without_decay_on_biases_and_norms():
    model = Block()
    configured = configure_optimization(model, total_steps=10, learning_rate=1e-3, weight_decay=0.1, warmup_ratio=0.2)
    optimizer = configured["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and configured["lr_scheduler"]["interval"] == "step"
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.dense.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(model.dense.bias), id(model.LayerNorm.weight),
                                                   id(model.LayerNorm.bias)}


@pytest.mark.parametrize("total, ratio", [(10, 0.2), (37, 0.1), (5, 0.0), (1, 0.5)])
def test_linear_warmup_decay_equals_transformers_schedule(total, ratio):
    ours_opt, theirs_opt = (torch.optim.SGD(parameter_groups(Block()), lr=0.5) for _ in range(2))
    ours = LinearWarmupDecay(ours_opt, total, ratio)
    theirs = get_linear_schedule_with_warmup(theirs_opt, int(ratio * total), total)
    for _ in range(total + 2):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), abs=1e-12)
        ours_opt.step(), theirs_opt.step()
        ours.step(), theirs.step()


@pytest.mark.slow
def test_an_injected_optimizer_and_schedule_reach_the_trainer(tiny_bert_dir, tmp_path):
    cli = main(["fit", *tiny_run_args(tiny_bert_dir, tmp_path / "run", train_batches=3),
                "--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=0.05", "--model.optimizer.momentum=0.9",
                "--model.lr_scheduler=torch.optim.lr_scheduler.OneCycleLR", "--model.lr_scheduler.max_lr=0.05"])
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.0]  # SGD's default, then ours
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == 3  # given the trainer's estimate: the schedule ends with the run
