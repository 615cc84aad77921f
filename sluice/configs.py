"""Configuration the SDKs fetch at start-up: Traffical config bundles and Xaiku experiments.

Operators load them with ``sluice config put`` and ``sluice experiments put``. They travel the way
API keys do — records in the compacted registry topic, which every gateway replica follows — so a
change is served by every replica within one fetch wait (well under 2 s) and survives restarts.
A record is one Traffical bundle per (org, project, env), or one Xaiku experiment per (org, id);
``rm`` writes a tombstone. Each ``put`` that changes a record raises its ``version`` by one (a
``put`` of the same bytes writes nothing); the ETag the gateway answers with is a digest of the
bytes it serves, so it changes exactly when they do.

Validation happens once, on load: a bundle against the schema Traffical's SDKs implement
(``schemas/traffical/config-bundle.schema.json``), experiments against what Xaiku's SDK reads.
The gateway serves the stored bytes as they are.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from importlib import resources
from typing import Any

import msgspec

log = logging.getLogger("sluice.configs")

MAX_BYTES = 900_000
"""A record must fit a Kafka message (1 MB by default) with its envelope."""


class ConfigError(ValueError):
    """A bundle or experiments file that cannot be loaded, and why."""


class TrafficalBundle(msgspec.Struct, kw_only=True):
    org_id: str
    project_id: str
    env: str
    version: int
    updated_at: float
    digest: str
    """sha256 hex of ``bundle``."""
    bundle: msgspec.Raw


class XaikuExperiment(msgspec.Struct, kw_only=True):
    org_id: str
    experiment_id: str
    version: int
    updated_at: float
    digest: str
    """sha256 hex of ``variants``."""
    variants: msgspec.Raw


class SavedMetrics(msgspec.Struct, kw_only=True):
    """The metrics an experiment's results show by default (``sluice experiments metrics set``),
    written ``kind:event`` or ``ratio:numerator/denominator`` (``pipeline.results.metric``)."""

    org_id: str
    experiment_id: str
    metrics: list[str]
    updated_at: float


KINDS = ("config", "experiment", "metrics")
_bundle_decoder = msgspec.json.Decoder(TrafficalBundle)
_experiment_decoder = msgspec.json.Decoder(XaikuExperiment)
_metrics_decoder = msgspec.json.Decoder(SavedMetrics)


def _ident(*parts: str) -> str:
    return msgspec.json.encode(list(parts)).decode()


def bundle_key(org_id: str, project_id: str, env: str) -> bytes:
    return f"config:{_ident(org_id, project_id, env)}".encode()


def experiment_key(org_id: str, experiment_id: str) -> bytes:
    return f"experiment:{_ident(org_id, experiment_id)}".encode()


def metrics_key(org_id: str, experiment_id: str) -> bytes:
    return f"metrics:{_ident(org_id, experiment_id)}".encode()


class ConfigStore:
    """The in-memory view of the config records of the registry topic."""

    def __init__(self) -> None:
        self.bundles: dict[tuple[str, str, str], TrafficalBundle] = {}
        self.experiments: dict[str, dict[str, XaikuExperiment]] = {}
        self.metrics: dict[tuple[str, str], SavedMetrics] = {}

    def apply(self, kind: str, ident: str, value: bytes | None) -> None:
        """Take one record of the topic; one that cannot be read is skipped (and logged), so it
        never stops a gateway following the topic — the rest keeps being served."""
        try:
            self._apply(kind, ident, value)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            log.warning("skipped an unreadable %s record: %s", kind, exc)

    def _apply(self, kind: str, ident: str, value: bytes | None) -> None:
        parts = msgspec.json.decode(ident, type=list[str])
        if kind == "config":
            org, project, env = parts
            if value is None:
                self.bundles.pop((org, project, env), None)
            else:
                self.bundles[org, project, env] = _bundle_decoder.decode(value)
        elif kind == "experiment":
            org, experiment = parts
            if value is None:
                self.experiments.get(org, {}).pop(experiment, None)
            else:
                self.experiments.setdefault(org, {})[experiment] = _experiment_decoder.decode(value)
        elif kind == "metrics":
            org, experiment = parts
            if value is None:
                self.metrics.pop((org, experiment), None)
            else:
                self.metrics[org, experiment] = _metrics_decoder.decode(value)

    def bundle(self, org_id: str, project_id: str, env: str) -> TrafficalBundle | None:
        return self.bundles.get((org_id, project_id, env))

    def experiments_of(self, org_id: str, ids: list[str] | None = None) -> dict[str, XaikuExperiment]:
        """The org's experiments, all of them or those of ``ids`` that exist, sorted by id."""
        mine = self.experiments.get(org_id, {})
        wanted = sorted(mine) if ids is None else sorted(i for i in set(ids) if i in mine)
        return {i: mine[i] for i in wanted}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- loading (the CLI's side) -------------------------------------------------------------------


@functools.cache
def bundle_schema() -> dict[str, Any]:
    text = resources.files("sluice.schemas").joinpath("traffical/config-bundle.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _parse(data: bytes, what: str) -> Any:
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{what} is {len(data)} bytes; the most is {MAX_BYTES}")
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{what} is not JSON: {exc}") from None


def load_bundle(data: bytes, project_id: str, env: str) -> bytes:
    """The bundle's bytes, compacted, once it is valid against the published schema and names
    the project and env it is loaded for."""
    import jsonschema

    bundle = _parse(data, "the bundle")
    validator = jsonschema.Draft7Validator(bundle_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(bundle))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"the bundle does not match Traffical's config-bundle schema at {where}: {error.message}")
    for field, wanted in (("projectId", project_id), ("env", env)):
        if bundle[field] != wanted:
            raise ConfigError(f"the bundle's {field} is {bundle[field]!r}, but it is being loaded for {wanted!r}")
    return msgspec.json.encode(bundle)


class Variant(msgspec.Struct):
    """A variant as Xaiku's SDK reads it (``selectVariant``, ``getVariantText``); other fields
    are kept and served."""

    id: str
    weight: float = 5.0
    control: bool = False
    parts: dict[str, str] = {}


def load_experiments(data: bytes) -> dict[str, bytes]:
    """``{"experiments": {id: [variant, …]}}`` → each experiment's variants as compact JSON."""
    document = _parse(data, "the experiments file")
    experiments = document.get("experiments") if isinstance(document, dict) else None
    if not isinstance(experiments, dict) or not experiments:
        raise ConfigError('the experiments file must look like {"experiments": {"<id>": [variant, …]}}')
    out = {}
    for experiment_id, variants in experiments.items():
        _check_variants(experiment_id, variants)
        out[experiment_id] = msgspec.json.encode(variants)
    return out


def _check_variants(experiment_id: str, variants: object) -> None:
    where = f"experiment {experiment_id!r}"
    if not experiment_id or not isinstance(variants, list) or not variants:
        raise ConfigError(f"{where}: needs a non-empty id and a non-empty list of variants")
    try:
        parsed = msgspec.convert(variants, list[Variant])
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if len({v.id for v in parsed}) != len(parsed) or not all(v.id for v in parsed):
        raise ConfigError(f"{where}: variant ids must be non-empty and distinct")
    # the SDK picks hash % total weight: a weight below 0, or a zero total, breaks every page
    if any(v.weight < 0 or not math.isfinite(v.weight) for v in parsed) or sum(v.weight for v in parsed) <= 0:
        raise ConfigError(f"{where}: weights must be finite, ≥ 0 and not all 0 (a missing weight is 5)")


def _next_version(previous: TrafficalBundle | XaikuExperiment | None, data: bytes) -> tuple[int, str] | None:
    """(version, digest) for a record of ``data``; None when ``previous`` already holds it."""
    sha = digest(data)
    if previous is not None and previous.digest == sha:
        return None
    return (previous.version if previous else 0) + 1, sha


def bundle_record(
    org_id: str, project_id: str, env: str, bundle: bytes, previous: TrafficalBundle | None
) -> TrafficalBundle | None:
    """The new record for ``bundle``, or None when nothing changed."""
    if (version := _next_version(previous, bundle)) is None:
        return None
    return TrafficalBundle(
        org_id=org_id, project_id=project_id, env=env, version=version[0], updated_at=time.time(),
        digest=version[1], bundle=msgspec.Raw(bundle),
    )  # fmt: skip


def experiment_record(
    org_id: str, experiment_id: str, variants: bytes, previous: XaikuExperiment | None
) -> XaikuExperiment | None:
    """The new record for ``variants``, or None when nothing changed."""
    if (version := _next_version(previous, variants)) is None:
        return None
    return XaikuExperiment(
        org_id=org_id, experiment_id=experiment_id, version=version[0], updated_at=time.time(),
        digest=version[1], variants=msgspec.Raw(variants),
    )  # fmt: skip


def as_record(value: TrafficalBundle | XaikuExperiment) -> tuple[bytes, bytes]:
    if isinstance(value, TrafficalBundle):
        return bundle_key(value.org_id, value.project_id, value.env), msgspec.json.encode(value)
    return experiment_key(value.org_id, value.experiment_id), msgspec.json.encode(value)
