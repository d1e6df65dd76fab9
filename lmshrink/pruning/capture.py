"""Read what flows through a sublayer during a forward pass: the input of its output projection (after any
mask), the projection's output and the pre-LayerNorm sum ``x + proj(a) + b``.

Sublayers are named ``(layer, "mha")`` or ``(layer, "ffn")`` and run in :func:`sublayer_order`. A forward can
stop right after a sublayer (``stop_after``), so collecting a lower layer does not pay for the upper ones.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import Literal

from torch import Tensor, nn

Sublayer = tuple[int, Literal["mha", "ffn"]]


def sublayer_order(num_layers: int) -> list[Sublayer]:
    """Bottom-up order: MHA_0, FFN_0, MHA_1, ..., FFN_{L-1} (spec §3.3)."""
    return [(layer, kind) for layer in range(num_layers) for kind in ("mha", "ffn")]


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted sublayer has been read."""


@contextmanager
def capture(model: nn.Module, sublayers: list[tuple[int, str]], stop_after: tuple[int, str] | None = None, *,
            modules: Callable[[nn.Module, tuple[int, str]], tuple[nn.Module, nn.Module]]):
    """Yield a dict filled at every forward: ``store[sublayer] = {"a", "proj", "z"}`` (padded ``[B, S, *]``
    tensors, still attached to the graph). With ``stop_after``, the forward raises :class:`StopForward` once
    that sublayer's pre-LN sum is read: wrap the call in :func:`run_until_stop`.

    ``modules(model, sublayer)`` gives (output projection, the module whose input is the sum after the sublayer):
    an encoder's LayerNorm (:func:`lmshrink.pruning.encoder.arch.sublayer_modules`) or a decoder's next pre-norm."""
    store: dict[Sublayer, dict[str, Tensor]] = {}
    handles = []

    def on_projection(sublayer):
        def hook(module, args, output):
            store.setdefault(sublayer, {}).update(a=args[0], proj=output)
        return hook

    def on_norm(sublayer):
        def hook(module, args):
            store.setdefault(sublayer, {})["z"] = args[0]
            if sublayer == stop_after:
                raise StopForward
        return hook

    try:
        for sublayer in sublayers:
            projection, norm = modules(model, sublayer)
            handles.append(projection.register_forward_hook(on_projection(sublayer)))
            handles.append(norm.register_forward_pre_hook(on_norm(sublayer)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def run_until_stop(model: nn.Module, inputs: dict[str, Tensor]):
    """``model(**inputs)``, or ``None`` when a capture hook stopped it early."""
    try:
        return model(**inputs)
    except StopForward:
        return None
