"""Post-training quantization of the Linear layers of a model, plain PyTorch (no Lightning).

:func:`quantize_model` applies a named scheme from :data:`SCHEMES`; :mod:`lmshrink.quantize.measure` gives
size and CPU latency. The Lightning side is :class:`lmshrink.callbacks.Quantize`.
"""

from lmshrink.quantize.checkpoint import load_quantized, save_quantized
from lmshrink.quantize.schemes import SCHEMES, QuantizationResult, check_supported, quantize_model

__all__ = ["SCHEMES", "QuantizationResult", "check_supported", "load_quantized", "quantize_model", "save_quantized"]
