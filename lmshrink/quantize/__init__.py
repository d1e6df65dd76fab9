"""Post-training quantization of the Linear layers of a model, plain PyTorch (no Lightning).

:func:`apply` is the one way to quantize (what stays in float, calibration, compilation) with a named scheme from
:data:`SCHEMES`; :mod:`lmshrink.quantize.size_latency` gives size and CPU latency. The Lightning side is
:class:`lmshrink.callbacks.Quantize`.
"""

from lmshrink.quantize.apply import Quantized, apply, default_skip
from lmshrink.quantize.saved_model import load_quantized, save_quantized
from lmshrink.quantize.schemes import SCHEMES, QuantizationResult, check_supported

__all__ = ["SCHEMES", "QuantizationResult", "Quantized", "apply", "check_supported", "default_skip", "load_quantized",
           "save_quantized"]
