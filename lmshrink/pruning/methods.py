"""The pruning methods as typed objects: what each one is called, which options it takes, what it reads and
whether it slices. The encoder module (``--model.method KPrune --model.method.flops_keep_ratio 0.5``, or
``class_path`` in YAML), the generator command (``--method kwon-keep0.7``), the audit and the study all take these
objects; an option a method does not take is refused by its signature, so nothing is silently ignored.

:func:`from_short_name` is the one place that maps a short name (``wanda-0.5``, ``sparsegpt-2:4``,
``kprune-keep0.7``) to a method. The rooms run them: :func:`lmshrink.pruning.encoder.run.prune_encoder` and
:func:`lmshrink.pruning.decoder.oneshot.prune_decoder_with`.
"""

from __future__ import annotations

from typing import ClassVar

from lmshrink.data.pruning_sample import samples_for_tokens
from lmshrink.errors import OptionError
from lmshrink.pruning.settings import KPruneSettings, KwonSettings
from lmshrink.pruning.sparsity_masks import parse_n_m


class PruningMethod:
    """A pruning method and its options (compared by value, so a resumed run can tell a changed method)."""

    name: ClassVar[str]
    """The method's name in records and short names (``kprune``, ``wanda``, ...)."""
    slices: ClassVar[bool] = False
    """The model is physically sliced (structured); otherwise weights are zeroed in place."""
    reads_sample: ClassVar[bool] = True
    """Needs data: a sample of the training split (encoders) or calibration windows (decoders)."""
    reads_labels: ClassVar[bool] = False
    """The sample carries labels (Kwon et al.'s Fisher information of the task loss)."""
    calibration_reads: ClassVar[frozenset[str]] = frozenset()
    """The decoder calibration settings (:class:`~lmshrink.pruning.decoder.oneshot.OneShotSettings`) it reads."""

    def options(self) -> dict:
        """The options as given (JSON-ready), for records and comparisons."""
        return dict(vars(self))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.options() == self.options()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(map(str, self.options().items())))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"

    @property
    def short_name(self) -> str:
        """The name a command line and a record use for these options (``wanda-0.5``, ``kprune-keep0.7``)."""
        raise NotImplementedError


class EncoderMethod(PruningMethod):
    """A method :class:`~lmshrink.modules.Prune` runs on a fine-tuned encoder (the type its ``method`` takes)."""


class DecoderMethod(PruningMethod):
    """A method that prunes a causal LM (``lmshrink prune-generator``, the audit's ``prune`` copies)."""


def _refuse(method: PruningMethod, option: str, value, rule: str) -> None:
    raise OptionError(f"{type(method).__name__}: {option}={value} must be {rule}")


def _check_fraction(method: PruningMethod, option: str, value: float, low_open: bool = False) -> None:
    if not ((0 < value < 1) if low_open else (0 <= value < 1)):
        _refuse(method, option, value, "in (0, 1)" if low_open else "in [0, 1)")


class BudgetedMethod(EncoderMethod, DecoderMethod):
    """A structured method that keeps a share of the FLOPs (K-prune, Kwon et al.); encoders and decoders."""

    slices = True
    calibration_reads = frozenset({"num_sequences", "seq_len", "seed", "batch_size"})

    def __init__(self, flops_keep_ratio: float) -> None:
        if not 0 < flops_keep_ratio <= 1:
            _refuse(self, "flops_keep_ratio", flops_keep_ratio, "in (0, 1]")
        self.flops_keep_ratio = flops_keep_ratio

    @property
    def short_name(self) -> str:
        return f"{self.name}-keep{self.flops_keep_ratio:g}"

    def sample_rows(self, mean_length: float, num_rows: int) -> int:
        """How many training rows the encoder sample holds."""
        raise NotImplementedError


class KPrune(BudgetedMethod):
    """K-prune (Park, Choi, Kang, ICLR 2024): knowledge-preserving structured pruning with least-squares weight
    tuning (pruning-spec §3; corrected mode unless ``faithful``)."""

    name = "kprune"

    def __init__(self, flops_keep_ratio: float = 0.5, num_tokens: int = 100_000,
                 temperature: float = KPruneSettings.temperature, lam_pred: float = KPruneSettings.lam_pred,
                 lam_rep: float = KPruneSettings.lam_rep, mu: float | None = KPruneSettings.mu,
                 weight_tuning: bool = KPruneSettings.weight_tuning, ridge: float = KPruneSettings.ridge,
                 faithful: bool = KPruneSettings.faithful) -> None:
        """
        Args:
            flops_keep_ratio: Share of the FLOPs kept; K-prune's ``--constraint c`` is ``1 - c``.
            num_tokens: Encoders: the sample's size in tokens of the training split (100K in the paper).
            temperature: Temperature of the KD loss whose gradients measure predictive knowledge.
            lam_pred: Weight of predictive knowledge in a unit's score.
            lam_rep: Weight of representational knowledge in a unit's score.
            mu: Head-vs-neuron balance; None means d_h (the official default).
            weight_tuning: Least-squares re-fit of each sublayer's surviving output-projection columns (KPWT).
            ridge: Relative ridge of the corrected solve (ignored by ``faithful``).
            faithful: Reproduce the official code's quirks (spec §3.6, §5.13) instead of the corrected mode.
        """
        super().__init__(flops_keep_ratio)
        if num_tokens < 1:
            _refuse(self, "num_tokens", num_tokens, ">= 1")
        self.num_tokens = num_tokens
        self.temperature, self.lam_pred, self.lam_rep, self.mu = temperature, lam_pred, lam_rep, mu
        self.weight_tuning, self.ridge, self.faithful = weight_tuning, ridge, faithful

    @property
    def settings(self) -> KPruneSettings:
        return KPruneSettings(self.temperature, self.lam_pred, self.lam_rep, self.mu, self.weight_tuning, self.ridge,
                              self.faithful)

    def sample_rows(self, mean_length: float, num_rows: int) -> int:
        return samples_for_tokens(self.num_tokens, mean_length, num_rows)


class Kwon(BudgetedMethod):
    """Kwon et al. (NeurIPS 2022): Fisher-based mask search, rearrangement and least-squares mask tuning
    (pruning-spec §2; corrected mode unless ``faithful``)."""

    name = "kwon"
    reads_labels = True

    def __init__(self, flops_keep_ratio: float = 0.5, num_samples: int = 2048,
                 rearrange: bool = KwonSettings.rearrange, mask_tuning: bool = KwonSettings.mask_tuning,
                 faithful: bool = KwonSettings.faithful) -> None:
        """
        Args:
            flops_keep_ratio: Share of the FLOPs kept.
            num_samples: Encoders: the sample's size in labelled training examples (2048 in the paper).
            rearrange: Mask rearrangement under the block-diagonal Fisher.
            mask_tuning: Least-squares mask tuning layer by layer.
            faithful: Reproduce the official code's quirks (spec §5.13) instead of the corrected mode.
        """
        super().__init__(flops_keep_ratio)
        if num_samples < 1:
            _refuse(self, "num_samples", num_samples, ">= 1")
        self.num_samples, self.rearrange, self.mask_tuning, self.faithful = num_samples, rearrange, mask_tuning, faithful

    @property
    def settings(self) -> KwonSettings:
        return KwonSettings(self.rearrange, self.mask_tuning, self.faithful)

    def sample_rows(self, mean_length: float, num_rows: int) -> int:
        return min(self.num_samples, num_rows)


class MagnitudeBaseline(EncoderMethod):
    """An encoder baseline that reads no data: a share of weights or heads removed by magnitude."""

    reads_sample = False

    def __init__(self, sparsity: float = 0.4) -> None:
        _check_fraction(self, "sparsity", sparsity)
        self.sparsity = sparsity

    @property
    def short_name(self) -> str:
        return f"{self.name}-{self.sparsity:g}"


class L1Unstructured(MagnitudeBaseline):
    """Global L1 magnitude pruning of the encoder's weights (the compression-fairness baseline); no data."""

    name = "l1-unstructured"

    def __init__(self, sparsity: float = 0.4) -> None:
        """
        Args:
            sparsity: Share of the encoder's prunable weights set to zero.
        """
        super().__init__(sparsity)


class L1Heads(MagnitudeBaseline):
    """Structured L1 baseline: the heads with the smallest weight norms removed, the model sliced; no data."""

    name = "l1-heads"
    slices = True

    def __init__(self, sparsity: float = 0.4) -> None:
        """
        Args:
            sparsity: Share of the attention heads removed.
        """
        super().__init__(sparsity)


class OneShotMethod(DecoderMethod):
    """Unstructured or N:M pruning of a decoder's block Linears, layer by layer: exactly one of ``sparsity`` and
    ``n_m``."""

    def __init__(self, sparsity: float | None = None, n_m: str | None = None) -> None:
        """
        Args:
            sparsity: Share of each layer's weights set to zero (unstructured).
            n_m: ``N:M``: N weights kept in every group of M consecutive inputs (e.g. ``2:4``).
        """
        if n_m is not None:
            try:
                parse_n_m(n_m)
            except ValueError as exc:
                raise OptionError(f"{type(self).__name__}: {exc}") from None
        if (sparsity is None) == (n_m is None):
            raise OptionError(f"{type(self).__name__}: give exactly one of sparsity and n_m")
        if sparsity is not None:
            _check_fraction(self, "sparsity", sparsity, low_open=True)
        self.sparsity, self.n_m = sparsity, n_m

    @property
    def pattern(self) -> tuple[int, int] | None:
        return parse_n_m(self.n_m) if self.n_m is not None else None

    @property
    def short_name(self) -> str:
        return f"{self.name}-{self.n_m if self.n_m is not None else format(self.sparsity, 'g')}"


class Magnitude(OneShotMethod):
    """Magnitude pruning within each layer (or each group of M); no data."""

    name = "magnitude"
    reads_sample = False


class Wanda(OneShotMethod):
    """Wanda (Sun et al. 2024): |weight| x input-feature norm, compared within each output row."""

    name = "wanda"
    calibration_reads = frozenset({"num_sequences", "seq_len", "seed", "batch_size"})


class SparseGPT(OneShotMethod):
    """SparseGPT (Frantar & Alistarh 2023): OBS-style pruning with Hessian updates of the remaining weights."""

    name = "sparsegpt"
    calibration_reads = frozenset({"num_sequences", "seq_len", "seed", "batch_size", "blocksize", "percdamp"})

    def __init__(self, sparsity: float | None = None, n_m: str | None = None, blocksize: int = 128,
                 percdamp: float = 0.01) -> None:
        """
        Args:
            sparsity: Share of each layer's weights set to zero (unstructured).
            n_m: ``N:M``: N weights kept in every group of M consecutive inputs (e.g. ``2:4``).
            blocksize: Columns per lazy-update block (the official default).
            percdamp: Dampening added to the Hessian's diagonal, as a share of its mean (the official default).
        """
        super().__init__(sparsity, n_m)
        if blocksize < 1:
            _refuse(self, "blocksize", blocksize, ">= 1")
        _check_fraction(self, "percdamp", percdamp)
        self.blocksize, self.percdamp = blocksize, percdamp


SHORT_NAMES = {cls.name: cls for cls in (KPrune, Kwon, L1Unstructured, L1Heads, Magnitude, Wanda, SparseGPT)}


def from_short_name(spec: str, room: type[PruningMethod] = DecoderMethod) -> PruningMethod:
    """``"wanda-0.5"`` -> ``Wanda(sparsity=0.5)``; ``"sparsegpt-2:4"`` -> ``SparseGPT(n_m="2:4")``;
    ``"kprune-keep0.7"`` -> ``KPrune(flops_keep_ratio=0.7)`` (the number is the FLOPs share *kept*)."""
    names = [name for name, cls in SHORT_NAMES.items() if issubclass(cls, room)]
    name, _, amount = spec.partition("-")
    if name == "l1":  # l1-unstructured-0.4, l1-heads-0.5
        kind, _, amount = amount.partition("-")
        name = f"l1-{kind}"
    cls = SHORT_NAMES.get(name)
    if cls is None or not issubclass(cls, room) or not amount:
        raise OptionError(f"{spec!r} is not <method>-<sparsity>, <method>-<N:M> or <method>-keep<ratio> with a "
                         f"method among {names} (e.g. wanda-0.5, sparsegpt-2:4, kwon-keep0.7)")
    if issubclass(cls, BudgetedMethod):
        try:
            keep = float(amount.removeprefix("keep")) if amount.startswith("keep") else None
        except ValueError:
            keep = None
        if keep is None:
            raise OptionError(f"{spec!r}: {name} takes a FLOPs keep ratio in (0, 1], written {name}-keep0.7")
        return cls(flops_keep_ratio=keep)
    if ":" in amount:
        if not issubclass(cls, OneShotMethod):
            raise OptionError(f"{spec!r}: {name} takes a sparsity, not an N:M pattern")
        return cls(n_m=amount)
    try:
        sparsity = float(amount)
    except ValueError:
        raise OptionError(f"{spec!r}: {amount!r} is neither a sparsity nor an N:M pattern") from None
    return cls(sparsity=sparsity)
