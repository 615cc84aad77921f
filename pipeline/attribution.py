"""Attribution: the (experiment, variant) pairs a track event counts for, in order — its explicit
``attribution`` list, else its ``decisionId``'s recorded assignment, else the unit's current
assignments, else the event's own ``experiment_id``/``variant_id`` — and the pairs an exposure or
decision names (``layers``)."""

from __future__ import annotations

from typing import Any

from pipeline.canonical import CanonicalEvent
from pipeline.state import MAX_ID, MAX_PAIRS, UnitState


def attribute(event: CanonicalEvent, unit: UnitState, properties: dict[str, Any]) -> list[tuple[str, str]]:
    """The (experiment, variant) pairs a track event counts for (see the module docstring)."""
    explicit = properties.get("attribution")
    if isinstance(explicit, list):
        pairs = _pairs(explicit)
        if pairs:
            return pairs
    if event.decision_id and event.decision_id in unit.decisions:
        return [tuple(p) for p in unit.decisions[event.decision_id]]  # type: ignore[misc]
    if unit.experiments:
        return sorted((experiment, a.variant) for experiment, a in unit.experiments.items())
    return own_pair(event)


def _pairs(items: list[Any]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if isinstance(item, dict):
            experiment = item.get("policyId") or item.get("experimentId")
            variant = item.get("allocationName") or item.get("variantId")
            if isinstance(experiment, str) and isinstance(variant, str) and experiment:
                out.append((experiment[:MAX_ID], variant[:MAX_ID]))
                if len(out) == MAX_PAIRS:
                    break
    return out


def layers_of(properties: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs an exposure or decision names: its allocated layers, but not those js-client
    marks ``attributionOnly`` (listed so tracks can be attributed, never shown to the unit)."""
    layers = properties.get("layers")
    if not isinstance(layers, list):
        return []
    return _pairs([layer for layer in layers if not (isinstance(layer, dict) and layer.get("attributionOnly"))])


def own_pair(event: CanonicalEvent) -> list[tuple[str, str]]:
    return [(event.experiment_id[:MAX_ID], event.variant_id[:MAX_ID])] if event.experiment_id else []
