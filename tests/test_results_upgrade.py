"""Results over rows written before migration 0006 (no worker-written ``events.value``: NULL), or
by a worker of the release before during a rolling upgrade: the covariate applies the value rule
to their properties with the deployment's ``SLUICE_VALUE_PROPERTY``, as the worker would have."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from pipeline.warehouse import Warehouse
from sluice.settings import Settings

pytestmark = pytest.mark.clickhouse

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# per unit: variant, x (its tallied purchase value after exposure), its purchase value in the 14 days before
UNITS = [
    ("control", 10.0, 8.0), ("control", 30.0, 25.0), ("control", 0.0, 0.0), ("control", 50.0, 40.0),
    ("treatment", 20.0, 12.0), ("treatment", 45.0, 30.0), ("treatment", 5.0, 0.0), ("treatment", 60.0, 50.0),
]  # fmt: skip


def _fill(warehouse: Warehouse, experiment: str, worker_wrote_value: bool) -> None:
    """An experiment whose units' pre-exposure purchases carry their amount in ``revenue`` (the
    deployment's SLUICE_VALUE_PROPERTY). ``worker_wrote_value``: the rows as this worker writes them
    (``value`` set); else as rows written before migration 0006, or by a worker of the release before
    during a rolling upgrade (no ``value`` in the insert: the column's DEFAULT)."""
    units: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for n, (variant, x, pre) in enumerate(UNITS):
        key = f"{experiment}-u{n}"
        units.append({
            "org_id": "acme", "project_id": "web", "env": "production", "experiment_id": experiment,
            "variant_id": variant, "unit_key": key, "first_exposed_at": ms(T0),
            "conversions": {"purchase": ms(T0)} if x else {}, "converted_at": ms(T0) if x else None, "variants_seen": 1,
            "event_counts": {"purchase": 1} if x else {}, "event_values": {"purchase": x} if x else {}, "version": 1,
        })  # fmt: skip
        rollup = {
            "org_id": "acme", "project_id": "web", "env": "production", "kind": "exposure",
            "experiment_id": experiment, "variant_id": variant, "event": "exposure",
            "minute": T0.strftime("%Y-%m-%d %H:%M:00"), "count": 1, "units": 1,
            "source_topic": "t", "source_partition": 0, "source_offset": n,
        }  # fmt: skip
        warehouse.insert_json("rollups_1m", msgspec.json.encode([rollup]))
        if pre:
            event = {
                "org_id": "acme", "project_id": "web", "env": "production", "message_id": f"{key}-pre",
                "family": "traffical", "type": "track", "event": "purchase", "unit_key": key,
                "timestamp": ms(T0 - timedelta(days=2)), "received_at": ms(T0 - timedelta(days=2)),
                "context": "{}", "traits": "{}", "properties": msgspec.json.encode({"revenue": pre}).decode(),
            }  # fmt: skip
            events.append(event | {"value": pre} if worker_wrote_value else event)
    warehouse.insert_json("experiment_units", msgspec.json.encode(units))
    warehouse.insert_json("events", msgspec.json.encode(events))


def _results(
    warehouse: Warehouse, experiment: str, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Any]:  # fmt: skip
    """``sluice experiments results EXPERIMENT --org acme --metric purchase --kind mean --format json``
    as a deployment with ``settings`` runs it."""
    import commands.resultscli as resultscli
    import pipeline.warehouse.remote as remote

    def no_registry(settings: Settings, wait: float = 10.0) -> Any:
        raise ConnectionError("no broker in this test")

    monkeypatch.setattr(resultscli, "_configs", no_registry)
    monkeypatch.setattr(remote, "warehouse_for_cli", lambda settings: warehouse)
    args = argparse.Namespace(
        experiment=experiment, org="acme", metric="purchase", event=None, kind="mean", denominator=None,
        fixed=True, no_cuped=False, alpha=0.05, control="control", format="json",
    )  # fmt: skip
    capsys.readouterr()
    assert resultscli.cmd_experiments_results(settings, args) == 0
    card: dict[str, Any] = msgspec.json.decode(capsys.readouterr().out)
    return card


def test_rows_without_a_worker_value_use_the_deployments_value_property_in_the_covariate(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row without a worker-written ``value`` (every row before migration 0006 — the CUPED window
    reaches 14 days back — and rows an old worker writes during a rolling upgrade) is read with the
    configured value property (here ``revenue``), as the tallies (x) were: the same experiment
    reads the same whichever way its rows were written. (Found in review: a DEFAULT with the
    default property made those purchases 0 in the covariate, and CUPED's reduction was lost.)"""
    settings = Settings(value_property="revenue")
    _fill(warehouse, "exp_new", worker_wrote_value=True)
    _fill(warehouse, "exp_old", worker_wrote_value=False)
    new = _results(warehouse, "exp_new", settings, monkeypatch, capsys)
    old = _results(warehouse, "exp_old", settings, monkeypatch, capsys)
    assert new["cuped"] and old["cuped"]

    def summary(card: dict[str, Any]) -> dict[str, float]:
        return {f"{v['variant']}.{name}": v[name] for v in card["variants"] for name in ("mean", "variance", "p_value")
                if name in v}  # fmt: skip

    assert summary(old) == pytest.approx(summary(new))
