"""Scorecard statistics against textbook values."""

from __future__ import annotations

import pytest

from pipeline.scorecard import chi2_survival, compute, render_table, srm_p_value, two_proportion_p, wilson


def test_wilson_interval() -> None:
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson(0, 0) == (0.0, 0.0)
    assert wilson(0, 10)[0] == 0.0


def test_two_proportion_z_test() -> None:
    assert two_proportion_p(60, 100, 50, 100) == pytest.approx(0.1552, abs=1e-4)
    assert two_proportion_p(5, 10, 5, 10) == pytest.approx(1.0)
    assert two_proportion_p(0, 10, 0, 10) == 1.0
    assert two_proportion_p(1, 0, 1, 10) is None


@pytest.mark.parametrize(("x", "df"), [(3.841458820694124, 1), (5.991464547107979, 2), (7.814727903251178, 3),
                                       (18.307038053275146, 10)])  # fmt: skip
def test_chi2_critical_values_give_five_percent(x: float, df: int) -> None:
    assert chi2_survival(x, df) == pytest.approx(0.05, abs=1e-9)


def test_chi2_tails() -> None:
    assert chi2_survival(0.0, 1) == 1.0
    assert chi2_survival(10.827566170662733, 1) == pytest.approx(0.001, abs=1e-9)
    assert chi2_survival(200.0, 1) < 1e-40


def test_srm() -> None:
    assert srm_p_value([5000, 5000]) == pytest.approx(1.0)
    assert srm_p_value([5000, 5400]) < 0.001  # type: ignore[operator]
    assert srm_p_value([1000, 9000], [10, 90]) == pytest.approx(1.0)
    assert srm_p_value([10]) is None


def test_compute_picks_control_and_lifts() -> None:
    card = compute("acme", "exp", [("control", 1000, 100), ("treatment", 1000, 130)], multiple=3)
    control, treatment = card.variants
    assert card.control == "control"
    assert (control.lift_abs, control.p_value) == (None, None)
    assert treatment.lift_abs == pytest.approx(0.03)
    assert treatment.lift_rel == pytest.approx(0.30)
    assert treatment.p_value == pytest.approx(two_proportion_p(130, 1000, 100, 1000))
    assert not card.srm_mismatch and card.multiple_exposure_units == 3
    table = render_table(card)
    assert "control (control)" in table and "+30.0%" in table and "sample ratio" in table


def test_compute_without_a_variant_called_control_uses_the_first_or_the_given_one() -> None:
    counts = [("a", 100, 10), ("b", 100, 20)]
    assert compute("o", "e", counts).control == "a"
    assert compute("o", "e", counts, control="b").control == "b"
