"""Checking a batch event by event, the same way for every family."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import msgspec

from services.gateway.errors import GatewayError
from sluice.envelope import DeadLetter
from sluice.registry import ApiKey

T = TypeVar("T")


class Sorted(msgspec.Struct):
    accepted: list[msgspec.Raw]
    indexes: list[int]
    errors: list[tuple[int, str]]
    units: list[str] = []
    """The unit of each accepted event (``sluice.routing.split`` routes by it)."""

    def dead_letters(
        self, raws: list[msgspec.Raw], family: str, route: str, key: ApiKey, received_at: float
    ) -> list[DeadLetter]:
        return [
            DeadLetter(
                family=family,
                route=route,
                org_id=key.org_id,
                project_id=key.project_id,
                env=key.env,
                reason=reason,
                received_at=received_at,
                payload=raws[index],
                index=index,
            )
            for index, reason in self.errors
        ]


def sort_events(
    raws: list[msgspec.Raw],
    decoder: msgspec.json.Decoder[T],
    check: Callable[[T], str | None],
    unit: Callable[[T], str] | None = None,
    forward: Callable[[T, msgspec.Raw], msgspec.Raw] | None = None,
) -> Sorted:
    """Decode each event with the family's struct and rule; valid ones keep their bytes (or what
    ``forward`` makes of the decoded event and its bytes), and their ``unit`` when the family's
    units are per event."""
    out = Sorted([], [], [], [])
    for index, raw in enumerate(raws):
        try:
            event = decoder.decode(raw)
            reason = check(event)
        except msgspec.ValidationError as exc:
            reason = str(exc)
        except RecursionError:
            reason = "event nests too deeply"
        if reason is None:
            out.accepted.append(raw if forward is None else forward(event, raw))
            out.indexes.append(index)
            if unit is not None:
                out.units.append(unit(event))
        else:
            out.errors.append((index, reason))
    return out


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes, shape: str) -> T:
    """The envelope, or a 400 that says what shape was expected."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise GatewayError(400, f"Invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise GatewayError(400, f"Request body must be {shape}") from exc
    except RecursionError as exc:
        raise GatewayError(400, "Request body nests too deeply") from exc


TENANT_FIELDS = {"orgId": "org_id", "projectId": "project_id", "env": "env"}


class TenantMismatches:
    """Counts body ``orgId``/``projectId``/``env`` values that differ from the key's, per field.

    The key decides the tenant. A differing body value cannot move data to another org, so it is
    no reason to drop an event: the event is kept (with the value, as sent, in ``context``) and
    the difference shows in ``sluice_gateway_tenant_mismatch_total``. Empty values count as unset.
    """

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.counts: Counter[str] = Counter()

    def around(self, check: Callable[[T], str | None]) -> Callable[[T], str | None]:
        """``check``, noting the mismatches of each event it lets through."""

        def checked(event: T) -> str | None:
            reason = check(event)
            if reason is None:
                for body_name, key_name in TENANT_FIELDS.items():
                    value = getattr(event, body_name, None)
                    if value and value != getattr(self.key, key_name):
                        self.counts[body_name] += 1
            return reason

        return checked
