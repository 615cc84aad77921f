"""The statistics core's inputs: per-variant sufficient statistics and the analysis options.

One SQL query per metric returns a ``VariantSums`` per variant; nothing downstream sees a row.
Per exposed unit i of a variant, x_i is the unit's metric (0/1 for ``conversion``, the summed
value for ``mean``, the number of events for ``count``, the numerator for ``ratio``) and d_i is
the second per-unit quantity: the denominator for ``ratio``, the pre-exposure covariate (the same
metric in the window before the unit's first exposure, 0 where it has none) for CUPED. For
``conversion`` both are 0/1, so Σx² = Σx and Σd² = Σd.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["conversion", "mean", "count", "ratio"]
KINDS: tuple[Kind, ...] = ("conversion", "mean", "count", "ratio")


class VariantSums(msgspec.Struct, frozen=True):
    """Sufficient statistics of one variant (the sums run over its exposed units)."""

    variant: str
    n: int  # exposed units
    sum: float  # Σx  (the numerator for ratio)
    sum_squares: float  # Σx²  (== sum for conversion, where x is 0/1)
    d_sum: float = 0.0  # ratio: Σd (denominator); CUPED: Σ pre-period covariate
    d_sum_squares: float = 0.0  # Σd²
    sum_of_products: float = 0.0  # Σx·d
    multi_exposed: int = 0  # units exposed to more than one variant (health; not used by the math)


MIN_ALPHA = 1e-9
"""The smallest α an interval is made for: below it 1 − α/2 is too near 1 for a double to hold
the tail's probability (at 1e-17 it rounds to 1)."""


def checked_alpha(alpha: float) -> float:
    """``alpha``, if ``MIN_ALPHA`` ≤ α < 1; else ``ValueError`` (NaN included)."""
    if not MIN_ALPHA <= alpha < 1.0:
        raise ValueError(f"alpha must be at least {MIN_ALPHA:g} and less than 1, not {alpha:g}")
    return alpha


class Options(msgspec.Struct, frozen=True):
    """How to analyse. ``cuped`` is ignored for ``ratio`` (the result then says ``cuped: false``).
    ``alpha`` outside ``checked_alpha``'s range raises ``ValueError``."""

    kind: Kind = "conversion"
    sequential: bool = True
    cuped: bool = False  # the caller decides the default (on for mean and count)
    alpha: float = 0.05
    tuning: float = 5000.0  # the sequential tuning parameter N* (units)
    weights: dict[str, float] | None = None  # declared allocation for SRM; equal when None

    def __post_init__(self) -> None:
        checked_alpha(self.alpha)
