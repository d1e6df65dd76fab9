"""lmshrink: train, compress and audit language models, measured per subgroup."""

__version__ = "0.1.0"
