"""The optimizer and learning-rate schedule of every training module: one default, injectable from the config.

Default (BERT / HF Trainer recipe): AdamW over two parameter groups, biases and norm weights without weight
decay, and a linear warmup over ``warmup_ratio`` of the steps followed by a linear decay to 0, stepped per
batch. A config replaces either part the LightningCLI way (as lightning-hydra-template's modules take a
partial optimizer)::

    model:
      init_args:
        optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.01, momentum: 0.9}}
        lr_scheduler: {class_path: torch.optim.lr_scheduler.OneCycleLR, init_args: {max_lr: 0.01}}

The optimizer is called with the two parameter groups (the no-decay group carries ``weight_decay=0``); the
scheduler with the optimizer, plus ``total_steps=`` (the trainer's estimate) when it takes that argument.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lmshrink.errors import OptionError
from lmshrink.options import init_defaults, set_options

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")

OptimizerFactory = Callable[[Iterable], Optimizer]
"""Builds the optimizer from parameter groups (Lightning's ``OptimizerCallable``)."""
SchedulerFactory = Callable[[Optimizer], torch.optim.lr_scheduler.LRScheduler]
"""Builds the schedule from the optimizer (Lightning's ``LRSchedulerCallable``); stepped every batch."""


def parameter_groups(model: nn.Module) -> list[dict]:
    """Trainable parameters in two groups: with weight decay, and without (biases and norm weights; Devlin et
    al. 2019). The first group takes the optimizer's own ``weight_decay``."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if any(marker in name for marker in NO_DECAY_MARKERS) else decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class LinearWarmupDecay(LambdaLR):
    """Linear warmup from 0 over ``warmup_ratio * total_steps`` steps, then linear decay to 0 at ``total_steps``
    (transformers' ``get_linear_schedule_with_warmup``)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.1) -> None:
        if not 0 <= warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={warmup_ratio} must be in [0, 1)")
        total = max(int(total_steps), 1)
        warmup = int(warmup_ratio * total)

        def factor(step: int) -> float:
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        super().__init__(optimizer, factor)


def _takes(factory: Callable, name: str) -> bool:
    """Whether ``factory`` accepts the keyword ``name``: a plain class or function, or the ``functools.partial``
    LightningCLI builds from ``class_path`` + ``init_args`` (every init argument filled in its keywords)."""
    if isinstance(factory, functools.partial):
        if name in factory.keywords:
            return True
        targets = [arg for arg in factory.args if isinstance(arg, type)] or [factory.func]
    else:
        targets = [factory]
    for target in targets:
        try:
            if name in inspect.signature(target).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def build_scheduler(factory: SchedulerFactory, optimizer: Optimizer, total_steps: int):
    """``factory(optimizer)``, passing ``total_steps`` to schedules that take it (OneCycleLR, LinearWarmupDecay)."""
    return factory(optimizer, total_steps=total_steps) if _takes(factory, "total_steps") else factory(optimizer)


def configure_optimization(model: nn.Module, total_steps: int, learning_rate: float, weight_decay: float,
                           warmup_ratio: float, optimizer: OptimizerFactory | None = None,
                           lr_scheduler: SchedulerFactory | None = None) -> dict:
    """What ``LightningModule.configure_optimizers`` returns: the given optimizer and schedule, or the default
    (AdamW at ``learning_rate`` / ``weight_decay``, :class:`LinearWarmupDecay` at ``warmup_ratio``)."""
    groups = parameter_groups(model)
    if optimizer is None:
        optimizer_ = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay)
    else:
        optimizer_ = optimizer(groups)
    if lr_scheduler is None:
        scheduler = LinearWarmupDecay(optimizer_, total_steps, warmup_ratio)
    else:
        scheduler = build_scheduler(lr_scheduler, optimizer_, total_steps)
    return {"optimizer": optimizer_, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def check_optimizer_options(learning_rate: float, weight_decay: float, warmup_ratio: float,
                            optimizer: OptimizerFactory | None = None, lr_scheduler: SchedulerFactory | None = None,
                            owner: type | None = None) -> None:
    """Refuse values that cannot train, and default-optimizer settings next to an injected optimizer or schedule
    (they would be silently ignored), at construction (before any data or model is loaded). ``owner`` is the
    module class whose ``__init__`` defaults tell what a config set."""
    if not learning_rate > 0:
        raise OptionError(f"--model.learning_rate={learning_rate} must be > 0")
    if not weight_decay >= 0:
        raise OptionError(f"--model.weight_decay={weight_decay} must be >= 0")
    if not 0 <= warmup_ratio < 1:
        raise OptionError(f"--model.warmup_ratio={warmup_ratio} must be in [0, 1)")
    if owner is None:
        return
    values = {"learning_rate": learning_rate, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio}
    for injected, factory, reads in (("optimizer", optimizer, ("learning_rate", "weight_decay")),
                                     ("lr_scheduler", lr_scheduler, ("warmup_ratio",))):
        changed = set_options(owner, values, reads) if factory is not None else []
        if changed:
            name = changed[0]
            raise OptionError(f"--model.{name}={values[name]} sets the default {injected}, which --model.{injected} "
                              f"replaces; set it in --model.{injected}'s init_args instead (where a config sets it, "
                              f"add --model.{name}={init_defaults(owner)[name]})")
