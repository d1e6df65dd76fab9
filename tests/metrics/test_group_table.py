import math

import torch

from lmshrink.metrics.groups import group_metrics_from_counts
from lmshrink.metrics.group_table import format_group_table, group_rows, summary


def test_rows_mark_absent_groups_and_deltas():
    correct = torch.tensor([3, 0, 1])
    total = torch.tensor([4, 0, 4])
    confusion = torch.tensor([[3, 1], [3, 1]])  # 4 of 8 correct
    results = group_metrics_from_counts(correct, total, confusion)
    rows = group_rows(["a", "b", "c"], results)
    assert [row.n for row in rows] == [4, 0, 4]
    assert rows[1].accuracy is None and rows[1].delta_to_avg is None
    assert rows[0].accuracy == 0.75 and math.isclose(rows[0].delta_to_avg, 0.25)
    assert math.isclose(rows[2].delta_to_avg, -0.25)
    text = format_group_table(rows, "title", summary(results))
    assert "absent" in text.splitlines()[3]
    assert text.splitlines()[4].endswith("<- worst")


def test_group_deltas_skip_absent_groups():
    from lmshrink.metrics.group_table import GroupRow, group_deltas

    rows = [GroupRow("a", 4, 0.75, 0.0), GroupRow("b", 0, None, None)]
    reference = [GroupRow("a", 4, 0.5, 0.0), GroupRow("b", 0, None, None)]
    assert group_deltas(rows, reference) == [0.25, None]
