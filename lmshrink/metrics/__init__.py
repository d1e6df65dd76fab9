"""Plain-torch metrics (no Lightning), per group and exact under DDP.

- :mod:`groups`: per-group accuracy, worst-group accuracy, group gap, macro-F1 (``GroupAccuracy``);
- :mod:`calibration_error`: ECE, Brier score, confidence (``GroupCalibration``);
- :mod:`agreement`: flips, discordant pairs and KL to a reference model; per-example outcomes;
- :mod:`significance`: Wilson intervals, exact McNemar, Holm, the paired bootstrap;
- :mod:`beyond_accuracy`, :mod:`group_table`: the final per-group numbers and table;
- :mod:`comparison`: ``GroupComparison``, a model and its reference measured together (used by GroupMetrics and
  Quantize); :mod:`gate_rule`: the pass/fail rule of ``python -m lmshrink.gate``.
"""

from lmshrink.metrics.comparison import GroupComparison
from lmshrink.metrics.groups import IGNORE_INDEX, GroupAccuracy, group_metrics_from_counts

__all__ = ["IGNORE_INDEX", "GroupAccuracy", "GroupComparison", "group_metrics_from_counts"]
