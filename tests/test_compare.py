"""numerics.compare: the normwise relative error every check reports, and where it is worst."""

import numpy as np
import pytest

from jaxcalc.numerics import compare


def test_finite_error_is_the_max_abs_difference_over_the_max_abs_reference():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((4, 5))
    a = b.copy()
    a[2, 3] += 1e-3
    a[0, 1] -= 5e-4
    c = compare(a, b)
    assert c.index == (2, 3) and c.finite
    assert c.error == pytest.approx(1e-3 / np.max(np.abs(b)), rel=1e-9)
    assert (c.a_value, c.b_value) == (a[2, 3], b[2, 3])
    assert compare(b, b).error == 0.0


def test_atol_floors_the_scale_of_a_zero_truth():
    assert compare(np.array([1e-12]), np.zeros(1)).error == pytest.approx(1e-12 / 1e-30)  # a tiny floor
    assert compare(np.array([1e-12]), np.zeros(1), atol=1e-6).error == pytest.approx(1e-6)


def test_matching_infinities_compare_equal_and_others_are_infinite():
    b = np.array([1.0, np.inf, -2.0])
    assert compare(np.array([1.0, np.inf, -2.0]), b).error == 0.0  # scale from the finite entries
    c = compare(np.array([1.0, np.inf, -2.0 + 1e-3]), b)
    assert c.finite and c.index == (2,) and c.error == pytest.approx(5e-4)
    for bad, where in ((np.array([1.0, -np.inf, -2.0]), 1), (np.array([np.nan, np.inf, -2.0]), 0)):
        c = compare(bad, b)
        assert c.error == np.inf and not c.finite and c.index == (where,)
    c = compare(np.array([1.0, 3.0]), np.array([1.0, np.nan]))  # a nan truth is never matched
    assert c.error == np.inf and c.index == (1,)


def test_shapes_must_match_and_empty_arrays_agree():
    with pytest.raises(ValueError, match="does not match"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)))
    assert compare(np.zeros(0), np.zeros(0)).error == 0.0
