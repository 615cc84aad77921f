"""The few distribution functions the tests need, in pure Python (no scipy at runtime).

- Student's t survival function through the regularized incomplete beta function
  I_x(a, b), evaluated by its continued fraction with the modified Lentz method
  (Press et al., *Numerical Recipes*, 3rd ed., §6.4 ``betacf``; DLMF 8.17.22):
  P(T > t) = ½ · I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0.
- Student's t quantile by Newton's method on that survival function, started from the normal
  quantile (Python's ``statistics.NormalDist``, Wichura's AS 241).
- Chi-square survival function as the regularized upper incomplete gamma Q(k/2, x/2): its series
  below a+1, its continued fraction above (Numerical Recipes §6.2 ``gser``/``gcf``).

Each is checked against scipy in tests/test_stats_distributions.py to about 1e-12 relative.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

_EPS = 1e-16
_TINY = 1e-300
_STANDARD_NORMAL = NormalDist()


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes ``betacf``), modified Lentz."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    # converges in O(sqrt(max(a, b))) steps
    for m in range(1, 100 + 20 * int(math.sqrt(max(a, b)))):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def _stirling_tail(z: float) -> float:
    """log Γ(z) − [(z − ½) ln z − z + ½ ln 2π], by its asymptotic series (z ≥ 100: error < 1e-17)."""
    return 1.0 / (12.0 * z) - 1.0 / (360.0 * z**3) + 1.0 / (1260.0 * z**5)


def log_gamma_ratio(a: float, b: float) -> float:
    """ln Γ(a + b) − ln Γ(a), without the cancellation of two large lgammas when a is large."""
    if a < 100.0:
        return math.lgamma(a + b) - math.lgamma(a)
    return (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + _stirling_tail(a + b) - _stirling_tail(a)


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1.

    ``y`` is 1 − x when the caller knows it more exactly than 1 − x rounds to (x near 1).
    """
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    big, small = (a, b) if a >= b else (b, a)
    log_front = log_gamma_ratio(big, small) - math.lgamma(small) + a * log_x + b * log_y
    # Numerical Recipes' switch, except for Student's t at large ν (a = ν/2 > 100, b = ½): there the direct
    # fraction loses about √a·ε, and the complementary one is exact to 1e-12 while a·y < 4.5
    # (t² < 9, so I_x > 0.002 and the subtraction from 1 costs at most 3 digits)
    if x < (a + 1.0) / (a + b + 2.0) and not (a > 100.0 and b < 1.0 and a * y < 4.5):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (df > 0, may be fractional)."""
    if math.isinf(df):
        return normal_sf(t)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_pdf(t: float, df: float) -> float:
    log_density = (
        log_gamma_ratio(df / 2.0, 0.5) - 0.5 * math.log(df * math.pi) - (df + 1.0) / 2.0 * math.log1p(t * t / df)
    )
    return math.exp(log_density)


@functools.lru_cache(maxsize=1024)
def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1): Newton's method on ``t_sf``.

    Started from the Cornish–Fisher expansion (Abramowitz & Stegun 26.7.5), so two or three steps
    reach the rounding level. Cached: a comparison asks twice (absolute and relative) for one ν.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    tail = 1.0 - q
    z = _STANDARD_NORMAL.inv_cdf(q)
    t = z + (z**3 + z) / (4.0 * df) + (5.0 * z**5 + 16.0 * z**3 + 3.0 * z) / (96.0 * df**2)
    if df < 1.0 or not math.isfinite(t):
        t = z
    for _ in range(50):
        # Newton on the survival function: f(t) = sf(t) - tail, f'(t) = -pdf(t)
        step = (t_sf(t, df) - tail) / t_pdf(t, df)
        if t + step <= 0.0:  # keep in the upper half, where the root lies
            step = -t / 2.0
        t += step
        if abs(step) <= 1e-12 * t:  # Newton converges quadratically: the error is now far smaller
            break
    return t


def normal_sf(z: float) -> float:
    """P(Z > z) for the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _gamma_series(a: float, x: float) -> float:
    """The regularized lower incomplete gamma P(a, x) by its series (x < a + 1)."""
    term = total = 1.0 / a
    ap = a
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """The regularized upper incomplete gamma Q(a, x) by its continued fraction (x ≥ a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for the chi-square distribution with ``df`` ≥ 1 degrees of freedom."""
    if x <= 0.0:
        return 1.0
    a, half = df / 2.0, x / 2.0
    if half < a + 1.0:
        return 1.0 - _gamma_series(a, half)
    return _gamma_continued_fraction(a, half)
