"""The entry points' output filters: installed once however often they are asked for."""

from __future__ import annotations

import logging

from lmshrink.quiet import quiet_third_party


def test_quiet_third_party_adds_one_lightning_filter_however_often_it_is_called():
    for _ in range(3):
        quiet_third_party()
    filters = logging.getLogger("lightning.pytorch.utilities.rank_zero").filters
    assert sum(type(existing).__name__ == "_DropLines" for existing in filters) == 1
