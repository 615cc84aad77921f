"""What the normalize stage writes to the keyed topic, and under which key.

One canonical event fans out to up to three records, each keyed so that the state it touches is
local to one partition (and one worker):

- ``event``   keyed ``org␀unit:UNIT``     — dedupe, the events table, experiments;
- ``user``    keyed ``org␀user:USER``     — first/last seen, traits, company membership;
- ``company`` keyed ``org␀company:ID``    — company traits (group / companies/identify).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.canonical import CanonicalEvent

Kind = Literal["event", "user", "company"]


class Routed(msgspec.Struct, array_like=True):
    kind: Kind
    event: CanonicalEvent


def route(event: CanonicalEvent) -> list[tuple[bytes, Routed]]:
    """The keyed records for one canonical event."""
    out = [(f"{event.org_id}\x00unit:{event.unit_key}".encode(), Routed("event", event))]
    if event.user_id:
        out.append((f"{event.org_id}\x00user:{event.user_id}".encode(), Routed("user", event)))
    if event.type == "group" and event.group_id:
        out.append((f"{event.org_id}\x00company:{event.group_id}".encode(), Routed("company", event)))
    return out


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Routed)
