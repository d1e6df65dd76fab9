"""AdamW with the usual transformer weight-decay exemptions and a linear warmup/decay schedule."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from lmshrink.errors import OptionError

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def check_optimizer_options(learning_rate: float, weight_decay: float, warmup_ratio: float) -> None:
    """Refuse values that cannot train, at construction (before any data or model is loaded)."""
    if not learning_rate > 0:
        raise OptionError(f"--model.learning_rate={learning_rate} must be > 0")
    if not weight_decay >= 0:
        raise OptionError(f"--model.weight_decay={weight_decay} must be >= 0")
    if not 0 <= warmup_ratio < 1:
        raise OptionError(f"--model.warmup_ratio={warmup_ratio} must be in [0, 1)")


def adamw_with_linear_warmup(
    model: nn.Module, learning_rate: float, weight_decay: float, warmup_ratio: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Biases and norm weights get no decay (Devlin et al. 2019 / HF Trainer); the schedule steps per batch."""
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio={warmup_ratio} must be in [0, 1)")
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(marker in name for marker in NO_DECAY_MARKERS) else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), max(total_steps, 1))
    return optimizer, scheduler
