"""Plain-torch metrics (no Lightning): per-group accuracy and the per-group report table."""

from lmshrink.metrics.groups import IGNORE_INDEX, GroupAccuracy, group_metrics_from_counts

__all__ = ["IGNORE_INDEX", "GroupAccuracy", "group_metrics_from_counts"]
