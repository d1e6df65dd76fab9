"""Distillation's option groups: where the student comes from, and how much each loss term weighs."""


from dataclasses import asdict, dataclass, fields

from lmshrink.errors import OptionError


@dataclass(frozen=True)
class StudentSource:
    """Where the student comes from: set exactly one (``--model.student.num_layers 3``)."""

    num_layers: int | None = None
    """Student = this many evenly spaced teacher blocks, copied (DistilBERT-style)."""
    layers: list[int] | None = None
    """Student = exactly these teacher blocks (0-based, as ``layer_map``), copied."""
    config: dict | None = None
    """Student = the teacher's architecture with these config fields, randomly initialised."""
    path: str | None = None
    """Student = this local HF model (must share the teacher's tokenizer)."""

    def check(self) -> None:
        """Exactly one source is set (checked by the module: an empty group is the parser's default)."""
        chosen = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(chosen) != 1:
            raise OptionError(f"set exactly one of {[f'--model.student.{f.name}' for f in fields(self)]} to define "
                              f"the student; got {[f'--model.student.{name}' for name in chosen] or 'none'} (to "
                              f"replace a config's source, unset it in the same group: --model.student '{{path: DIR, num_layers: null}}')")


@dataclass(frozen=True)
class LossWeights:
    """The weight of each distillation loss term (0: the term is not computed)."""

    kd: float = 1.0
    """Soft-target KL at the temperature (Hinton et al. 2015)."""
    ce: float = 0.0
    """Cross-entropy on the gold labels (the next token for a causal LM)."""
    hidden: float = 0.0
    """Hidden-state MSE over mapped layers, through learned projections (TinyBERT)."""
    cosine: float = 0.0
    """``1 - cos`` between last hidden states (DistilBERT)."""
    attention: float = 0.0
    """Attention-map KL over mapped layers (MiniLM)."""
    embedding: float = 0.0
    """Embedding-output MSE (TinyBERT)."""

    def __post_init__(self) -> None:
        negative = [f.name for f in fields(self) if getattr(self, f.name) < 0]
        if negative:
            raise OptionError(f"--model.loss_weights.{negative[0]}={getattr(self, negative[0])} must be >= 0")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def feature_terms(self) -> list[str]:
        """The terms set here that need the teacher's hidden states or attention maps every step."""
        return [name for name in ("hidden", "cosine", "attention", "embedding") if getattr(self, name)]
