from lmshrink.callbacks.checkpoint import ResumableModelCheckpoint
from lmshrink.callbacks.group_metrics import GroupMetrics
from lmshrink.callbacks.qat import QuantizationAwareTraining
from lmshrink.callbacks.quantization import Quantize

__all__ = ["GroupMetrics", "Quantize", "QuantizationAwareTraining", "ResumableModelCheckpoint"]
