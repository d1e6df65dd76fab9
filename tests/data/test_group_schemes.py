import numpy as np

from lmshrink.data.group_schemes import GROUP_SCHEMES, label_x_columns, scheme_membership
from lmshrink.data.tables import encode_labels
from tests.data.fixtures import civilcomments_frame, multinli_frame, scotus_frame


def _labels(scheme, frame):
    return encode_labels(frame, scheme.label_column, scheme.num_labels, "fixture",
                         list(scheme.label_names) if scheme.label_names else None, scheme.label_threshold)


def test_civilcomments_four_groups_label_by_identity_any():
    frame = civilcomments_frame()
    scheme = GROUP_SCHEMES["civilcomments"]
    names, membership = scheme_membership(scheme, frame, _labels(scheme, frame))
    assert names == ["nontoxic|identity_any=0", "nontoxic|identity_any=1", "toxic|identity_any=0", "toxic|identity_any=1"]
    assert (membership.sum(axis=1) == 1).all()
    # 6 rows with no identity and 8 x 6 rows with one identity, per label
    assert membership.sum(axis=0).tolist() == [6, 48, 6, 48]


def test_civilcomments_wilds_sixteen_overlapping_groups():
    frame = civilcomments_frame()
    frame.loc[0, ["male", "black"]] = 0.7  # one comment mentioning two identities belongs to two groups
    scheme = GROUP_SCHEMES["civilcomments_wilds"]
    names, membership = scheme_membership(scheme, frame, _labels(scheme, frame))
    assert len(names) == 16 and names[:2] == ["nontoxic|male", "toxic|male"]
    assert membership[0].sum() == 2
    assert membership[frame["male"].to_numpy() < 0.5, 0].sum() == 0


def test_multinli_negation_groups():
    frame = multinli_frame()
    scheme = GROUP_SCHEMES["multinli"]
    names, membership = scheme_membership(scheme, frame, _labels(scheme, frame))
    assert len(names) == 6 and names[1] == "entailment|negation=1"
    assert membership.sum(axis=0).tolist() == [5] * 6


def test_scotus_label_by_direction():
    frame = scotus_frame()
    scheme = GROUP_SCHEMES["scotus"]
    names, membership = scheme_membership(scheme, frame, _labels(scheme, frame))
    assert len(names) == 28 and membership.sum(axis=0).tolist() == [3] * 28


def test_label_x_columns_is_sorted_by_label_then_value():
    frame = civilcomments_frame().assign(topic=lambda f: np.where(f.index % 2, "b", "a"))
    labels = np.array([1, 0] * (len(frame) // 2))
    names, membership = label_x_columns(frame, labels, ["neg", "pos"], ["topic"])
    assert names == ["neg|b", "pos|a"]  # odd rows have label 0 and topic b
    assert membership[1, 0] and membership[0, 1]
