"""A per-process budget of request bytes in flight, so that slow clients cannot exhaust memory.

Every body the gateway reads is held in memory until its request is answered. Without a cap, a
few hundred clients that send most of a 1 MiB body and then stall hold hundreds of MiB for the
whole client timeout. Each request reserves its bytes here before reading them (all at once when
it declares a ``Content-Length``, chunk by chunk otherwise) and gives them back when answered; a
reservation that does not fit is refused, and the gateway answers 503 with ``Retry-After``.

Fairness: SDK batches are small. Bodies larger than ``large`` bytes may hold at most half of the
budget between them, so a crowd of slow large uploads cannot crowd out ordinary batches.
"""

from __future__ import annotations


class OverBudget(Exception):
    """The reservation does not fit; retry later."""


class ByteBudget:
    def __init__(self, limit: int, large: int) -> None:
        self.limit = limit
        self.large = large
        self.used = 0
        self.used_large = 0
        self.refusals = 0

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """One request's share of the budget; grows as its body arrives, released once answered."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    def grow(self, total: int) -> None:
        """Hold ``total`` bytes in all, or raise :class:`OverBudget` (holding what it held)."""
        budget, extra = self.budget, total - self.held
        if extra <= 0:
            return
        large_after = budget.used_large
        if total > budget.large:
            large_after += extra if self.held > budget.large else total
        if budget.used + extra > budget.limit or large_after > budget.limit // 2:
            budget.refusals += 1
            raise OverBudget(f"{budget.used} of {budget.limit} request bytes in flight")
        budget.used += extra
        budget.used_large = large_after
        self.held = total

    def release(self) -> None:
        budget = self.budget
        budget.used -= self.held
        if self.held > budget.large:
            budget.used_large -= self.held
        self.held = 0
