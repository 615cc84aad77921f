"""The pure-Python distribution functions of pipeline.stats against scipy's."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from pipeline.stats.distributions import chi2_sf, normal_sf, t_ppf, t_sf

DFS = [1.0, 2.0, 2.5, 7.3, 30.0, 199.9, 5_000.0, 123_456.7, 3.0e6, 2.0e7]
TS = [0.0, 0.01, 0.5, 1.0, 1.96, 2.5, 4.0, 8.0, 15.0, 40.0]


# The continued fraction loses about √ν·ε in the tail at very large ν (3e-9 at ν = 1e8, t > 3):
# far inside the 1e-6 the statistics promise
def close(ours: float, theirs: float, rel: float = 1e-8) -> bool:
    return math.isclose(ours, theirs, rel_tol=rel, abs_tol=1e-300)


@pytest.mark.parametrize("df", DFS)
def test_t_sf_and_ppf_match_scipy(df: float) -> None:
    for t in TS:
        for value in (t, -t):
            want = float(scipy_stats.t.sf(value, df))
            assert close(t_sf(value, df), want), (value, df, t_sf(value, df), want)
    for q in (0.5, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.05, 0.025):
        want = float(scipy_stats.t.ppf(q, df))
        assert math.isclose(t_ppf(q, df), want, rel_tol=1e-9, abs_tol=1e-12), (q, df, t_ppf(q, df), want)


def test_normal_sf_matches_scipy() -> None:
    for z in (-3.0, -1.0, 0.0, 1.0, 1.96, 5.0, 10.0):
        assert close(normal_sf(z), float(scipy_stats.norm.sf(z)), 1e-12)
    assert t_sf(1.96, math.inf) == normal_sf(1.96)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 100])
def test_chi2_sf_matches_scipy(df: int) -> None:
    for x in (0.0, 1e-6, 0.1, 0.5, 1.0, 2.0, df - 0.5, float(df), df + 1.5, 10.0, 50.0, 200.0, 700.0):
        want = float(scipy_stats.chi2.sf(x, df))
        assert close(chi2_sf(x, df), want, 1e-12), (x, df, chi2_sf(x, df), want)


def test_t_ppf_rejects_levels_outside_zero_one() -> None:
    with pytest.raises(ValueError):
        t_ppf(1.0, 10.0)
