"""The merge rules of the worker's state (``pipeline.state``): how an event changes a unit, a user
or a company. Compiled with the other per-event modules (``pipeline.native``), so the structs they
change are defined apart, in ``pipeline.state``.

Every rule is idempotent (see ``pipeline.state``) and says whether it changed anything: a unit
exposed again, or a track it already converted on, writes no state and no row, and telling so
from the rules is cheaper than comparing the unit's encoding before and after.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.state import (
    MAX_CONVERSIONS,
    MAX_COUNTED,
    MAX_DECISIONS,
    MAX_ID,
    MAX_PAIRS,
    MAX_TRAITS,
    MAX_VARIANTS,
    Assignment,
    CompanyState,
    Source,
    Trait,
    UnitState,
    UserState,
)


def decide(unit: UnitState, decision_id: str, pairs: list[tuple[str, str]]) -> bool:
    """Remember which (experiment, variant) pairs a decision id stands for, for the tracks that
    cite it; only the newest ``MAX_DECISIONS``, so a unit's state stays small however many
    decisions it sees (tracks cite recent decisions)."""
    decisions = unit.decisions
    key, kept = decision_id[:MAX_ID], pairs[:MAX_PAIRS]
    if decisions.get(key) == kept:
        return False
    decisions[key] = kept
    while len(decisions) > MAX_DECISIONS:
        del decisions[next(iter(decisions))]
    return True


def assign(unit: UnitState, experiment: str, variant: str, at: float) -> bool:
    """A decision: intent to treat, not an exposure."""
    current = unit.experiments.get(experiment)
    changed = current is None
    if current is None:
        current = unit.experiments[experiment] = Assignment(variant=variant)
    assigned = current.assigned_at
    if assigned is None or at < assigned:
        current.assigned_at = at
        changed = True
    return changed


def expose(unit: UnitState, experiment: str, variant: str, at: float, source: Source) -> tuple[bool, bool]:
    """Record an exposure: whether this record is the unit's first exposure to it, and whether
    the unit changed."""
    current = unit.experiments.get(experiment)
    changed = current is None
    if current is None:
        current = unit.experiments[experiment] = Assignment(variant=variant)
    if current.first_exposed_by is None:
        current.first_exposed_by = source
        current.variant = variant  # the first exposure decides the unit's variant
        changed = True
    variants = current.variants
    if variant not in variants and len(variants) < MAX_VARIANTS:
        variants.append(variant)
        changed = True
    exposed = current.first_exposed_at
    if exposed is None or at < exposed:
        current.first_exposed_at = at
        changed = True
    return current.first_exposed_by == source, changed


def convert(
    unit: UnitState, experiment: str, variant: str, event: str, at: float, source: Source, value: float = 0.0
) -> tuple[bool, bool]:
    """Record an attributed track: whether it is the unit's first ``event`` in it, and whether
    the unit changed. A track at or after the unit's first exposure (as known now) is also added
    to the event's tally (``Assignment.tallies``), once per source item."""
    current = unit.experiments.get(experiment)
    created = current is None
    if current is None:
        current = unit.experiments[experiment] = Assignment(variant=variant)
    conversions = current.conversions
    first = conversions.get(event)
    if first is None:
        if len(conversions) >= MAX_CONVERSIONS:
            return False, created
        conversions[event] = (at, source)
        tally(current, event, at, source, value)
        return True, True
    tallied = tally(current, event, at, source, value)
    if at < first[0]:
        conversions[event] = (at, first[1])  # earliest time, same counting record
        return first[1] == source, True
    return first[1] == source, created or tallied


def tally(current: Assignment, event: str, at: float, source: Source, value: float) -> bool:
    """Add a track to its event's (count, value sum) if it is at or after the first exposure and
    this source item was not tallied yet (see ``Assignment.counted``); whether it was added."""
    exposed = current.first_exposed_at
    if exposed is None or at < exposed:
        return False
    counted = current.counted
    partition, position = source[0], (source[1], source[2])
    mark = counted.get(partition)
    if mark is not None and position <= mark:
        return False
    if mark is None and len(counted) >= MAX_COUNTED:
        del counted[next(iter(counted))]
    counted[partition] = position
    count, total = current.tallies.get(event, (0, 0.0))
    current.tallies[event] = (count + 1, total + value)
    return True


def touch(state: UserState | CompanyState, at: float) -> None:
    state.first_seen = min(state.first_seen, at)
    state.last_seen = max(state.last_seen, at)


def join(user: UserState, company_id: str) -> None:
    if company_id and company_id not in user.companies:
        user.companies.append(company_id)
        user.companies.sort()


def merge_traits(traits: dict[str, Trait], new: dict[str, Any], at: float) -> int:
    """Last writer wins per trait, by event time; ties broken by the value's JSON, so the
    result does not depend on the order events are processed in. Returns how many new names
    were turned away by ``MAX_TRAITS``."""
    refused = 0
    for name, value in new.items():
        old = traits.get(name)
        if old is None and len(traits) >= MAX_TRAITS:
            refused += 1
            continue
        if old is None or (at, _order(value)) > (old.at, _order(old.value)):
            traits[name] = Trait(at, value)
    return refused


def _order(value: Any) -> bytes:
    return msgspec.json.encode(value)


def plain_traits(traits: dict[str, Trait]) -> dict[str, Any]:
    return {name: trait.value for name, trait in sorted(traits.items())}
