from lmshrink.callbacks.group_metrics import GroupMetrics

__all__ = ["GroupMetrics"]
