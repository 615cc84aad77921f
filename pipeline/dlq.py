"""Dead letters: listing them, and re-submitting them to the raw topic.

A replayed letter becomes a one-event raw batch of its family and route, as if the client had
sent it again: it passes the normalizer (fixed, presumably) or comes back to the DLQ with its
reason. Its message id is the client's own, else derived from the letter's id, so replaying the
same letter twice is deduplicated downstream.

Identity verification holds on a replay too: a letter that may change a user (an identify,
group or alias; a Halo request naming a user) of an org that verifies identities is not
re-submitted unless the operator vouches for it (``--trust-identity``): the gateway checks a
``user_token`` before it accepts such an event, and a letter carries no token (the gateway strips
it). Since issue 24 the gateway never dead-letters an unproven identity change, but letters
written before it may be one.
"""

from __future__ import annotations

import time

import msgspec

from pipeline.deadletters import DlqRow
from pipeline.warehouse import Warehouse
from pipeline.warehouse.formats import QUERY_FORMATS
from sluice.envelope import RawBatch, body_digest, encoder
from sluice.kafkaconf import durable_producer, kafka_security
from sluice.settings import Settings

COLUMNS = "id, received_at, org_id, family, route, source, reason, payload"
ROW_COLUMNS = ", ".join(DlqRow.__struct_fields__)
IDENTITY_TYPES = frozenset({"identify", "group", "alias", "$identify", "$create_alias", "$groupidentify", "$set"})
HALO_IDENTITY_ROUTES = frozenset({"/api/sdk/users/identify", "/api/sdk/companies/identify"})


def list_letters(warehouse: Warehouse, org_id: str | None, limit: int, fmt: str) -> bytes:
    where = "WHERE org_id = {org:String}" if org_id else ""
    sql = f"SELECT {COLUMNS} FROM dlq FINAL {where} ORDER BY received_at DESC LIMIT {{limit:UInt64}}"
    parameters: dict[str, str | int] = {"limit": int(limit)} | ({"org": org_id} if org_id else {})
    return warehouse.execute(sql, QUERY_FORMATS[fmt], parameters=parameters)


def may_change_identity(letter: DlqRow) -> bool:
    """Whether a letter's event may change a user (a payload that does not decode may)."""
    if letter.family in ("xaiku", "traffical"):  # their events change no user
        return False
    if letter.family == "halo":
        named = msgspec.json.decode(letter.batch or "{}", type=dict[str, object]).get("user_id")
        return letter.route in HALO_IDENTITY_ROUTES or bool(named)
    try:
        event = msgspec.json.decode(letter.payload)
    except msgspec.DecodeError:
        return True
    if not isinstance(event, dict):
        return True
    kind = event.get("type") or event.get("event")
    properties = event.get("properties")
    changes_person = isinstance(properties, dict) and ("$set" in properties or "$set_once" in properties)
    return kind in IDENTITY_TYPES or changes_person or "$set" in event


class Replayed(msgspec.Struct):
    submitted: int
    held: list[str]
    """Ids of letters not re-submitted: they may change a user of an org that verifies identities."""


async def replay(
    settings: Settings, warehouse: Warehouse, *, ids: list[str], org_id: str | None,
    verified_orgs: frozenset[str] = frozenset(), trust_identity: bool = False,
) -> Replayed:  # fmt: skip
    """Re-submit the letters chosen by ``ids`` or ``org_id``, but those that may change a user of
    one of ``verified_orgs`` (unless ``trust_identity``)."""
    conditions: list[str] = []
    parameters: dict[str, str | list[str]] = {}
    if ids:
        conditions.append("has({ids:Array(String)}, id)")
        parameters["ids"] = ids
    if org_id:
        conditions.append("org_id = {org:String}")
        parameters["org"] = org_id
    sql = f"SELECT {ROW_COLUMNS} FROM dlq FINAL WHERE {' AND '.join(conditions)} AND family != ''"
    out = warehouse.execute(sql, "JSONEachRow", parameters=parameters)
    letters = [msgspec.json.decode(line, type=DlqRow) for line in out.splitlines() if line]
    held = [
        letter.id for letter in letters
        if not trust_identity and letter.org_id in verified_orgs and may_change_identity(letter)
    ]  # fmt: skip
    letters = [letter for letter in letters if letter.id not in held]
    producer = durable_producer(settings.kafka_bootstrap, kafka_security(settings))
    await producer.start()
    try:
        for letter in letters:
            batch = RawBatch(
                family=letter.family,  # type: ignore[arg-type]
                route=letter.route, org_id=letter.org_id, project_id=letter.project_id or "default",
                env=letter.env or "production", received_at=time.time(),
                body_digest=body_digest(letter.id.encode()), events=[msgspec.Raw(letter.payload.encode())],
                indexes=[0], batch=msgspec.json.decode(letter.batch or "{}", type=dict[str, msgspec.Raw]),
            )  # fmt: skip
            await producer.send_and_wait(settings.raw_topic, encoder.encode(batch), key=letter.org_id.encode())
    finally:
        await producer.stop()
    return Replayed(len(letters), held)
