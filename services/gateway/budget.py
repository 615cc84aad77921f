"""A per-process budget of request bytes in flight, so that slow clients cannot exhaust memory.

Every body the gateway reads is held in memory until its request is answered. Without a cap, a
few hundred clients that send most of a 1 MiB body and then stall hold hundreds of MiB for the
whole client timeout. Each request reserves its bytes here as they arrive, chunk by chunk, and
gives them back when answered; a reservation that does not fit is refused, and the gateway
answers 503 with ``Retry-After``.

Only bytes that have arrived are reserved, never a declared ``Content-Length``: a declaration
costs nothing to send, and a few hundred idle connections declaring 1 MiB each would otherwise
fill the budget and shut out everyone (issue 24). What an attacker can hold is what it uploads.

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
        self.requests = 0
        """Reservations open now: requests being read or answered (idle ones hold no bytes)."""

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """One request's share of the budget; grows as its body arrives, released once answered."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0
        budget.requests += 1

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
        """Give the bytes back and close the reservation (once: the middleware's ``finally``)."""
        budget = self.budget
        budget.used -= self.held
        if self.held > budget.large:
            budget.used_large -= self.held
        self.held = 0
        budget.requests -= 1
