"""``sluice experiments results`` and ``sluice experiments metrics set|list|rm``.

Results read the configured warehouse (a ClickHouse server, or the embedded one through the worker
that owns it) and the experiment's declared split and saved metrics from the registry topic, where
``sluice config put`` / ``sluice experiments put`` load them. Without Kafka the split is taken as
equal (said on stderr). With no ``--metric`` (and no ``--kind``), the saved metrics are shown in
turn (JSON: one object per line), else a conversion on any attributed track; the rule is
``pipeline.results.metric.chosen``, which the HTTP API and the page follow too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import msgspec

from sluice.configs import ConfigStore, SavedMetrics, metrics_key
from sluice.kafkaconf import kafka_security
from sluice.registry_topic import read_registry, write_records
from sluice.settings import Settings

KIND_CHOICES = ["conversion", "mean", "count", "ratio"]


def add_results_commands(experiments: Any) -> None:
    results = experiments.add_parser("results", help="per-variant results: lifts, intervals, p-values, SRM")
    results.add_argument("experiment")
    results.add_argument("--org", required=True)
    results.add_argument("--metric", help="the event E (or kind:event, ratio:E/E2); default: the saved metrics")
    results.add_argument("--kind", choices=KIND_CHOICES, help="default conversion")
    results.add_argument("--denominator", help="ratio: the event whose count divides (default: E)")
    results.add_argument("--fixed", action="store_true", help="fixed-horizon test (default: sequential)")
    results.add_argument("--no-cuped", action="store_true", help="no CUPED (default on for mean and count)")
    results.add_argument("--alpha", type=_alpha, default=0.05, help="1 − the intervals' level (default 0.05)")
    results.add_argument("--control", help="the control variant (default: declared, else 'control', else first)")
    results.add_argument("--format", choices=["table", "json"], default="table")
    results.add_argument("--event", help=argparse.SUPPRESS)  # the older name of --metric
    results.set_defaults(run=cmd_experiments_results)

    metrics = experiments.add_parser("metrics", help="an experiment's saved metrics").add_subparsers(
        required=True, metavar="ACTION"
    )
    put = metrics.add_parser("set", help="save the metrics results show by default")
    put.add_argument("experiment")
    put.add_argument("--org", required=True)
    put.add_argument("metric", nargs="+", help="kind:event or ratio:E/E2, e.g. mean:purchase")
    put.set_defaults(run=cmd_metrics_set)
    listing = metrics.add_parser("list", help="the saved metrics")
    listing.add_argument("--org")
    listing.set_defaults(run=cmd_metrics_list)
    rm = metrics.add_parser("rm", help="forget an experiment's saved metrics")
    rm.add_argument("experiment")
    rm.add_argument("--org", required=True)
    rm.set_defaults(run=cmd_metrics_rm)


def _alpha(text: str) -> float:
    from pipeline.stats.sums import checked_alpha

    try:
        return checked_alpha(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _configs(settings: Settings, wait: float = 10.0) -> ConfigStore:
    registry = asyncio.run(
        read_registry(settings.kafka_bootstrap, settings.registry_topic, wait, security=kafka_security(settings))
    )
    return registry.configs


def cmd_experiments_results(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.results.declared import declared
    from pipeline.results.metric import MetricError, chosen
    from pipeline.scorecard import Request, render_table, scorecard
    from pipeline.warehouse import WarehouseError
    from pipeline.warehouse.remote import warehouse_for_cli

    try:
        configs: ConfigStore | None = _configs(settings, 5.0)
    except Exception as exc:  # no broker here: results still answer, with equal weights
        print(f"sluice: the declared split is unknown ({type(exc).__name__}); SRM uses equal weights", file=sys.stderr)
        configs = None
    known = declared(configs, args.org, args.experiment)
    try:
        metrics = chosen(args.metric or args.event, args.kind, args.denominator, known.metrics)
    except MetricError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    warehouse = warehouse_for_cli(settings)
    for measured in metrics:
        request = Request(
            measured, sequential=not args.fixed, cuped=False if args.no_cuped else None, alpha=args.alpha,
            control=args.control, timeline=args.format == "json",
        )  # fmt: skip
        try:
            card = scorecard(warehouse, args.org, args.experiment, request, known, settings.value_property)
        except WarehouseError as exc:
            print(f"sluice: {exc}", file=sys.stderr)
            return 1
        if card is None:
            print(f"sluice: no exposures for experiment {args.experiment} in org {args.org}", file=sys.stderr)
            return 1
        if args.format == "json":
            print(msgspec.json.encode(card).decode())
        else:
            sys.stdout.write(render_table(card) + ("\n" if len(metrics) > 1 else ""))
    return 0


def cmd_metrics_set(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.results.metric import MetricError, parse

    try:
        names = [parse(text).name for text in args.metric]
    except MetricError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    record = SavedMetrics(org_id=args.org, experiment_id=args.experiment, metrics=names, updated_at=time.time())
    _write(settings, [(metrics_key(args.org, args.experiment), msgspec.json.encode(record))])
    print(f"experiment {args.org}/{args.experiment}: {' '.join(names)}", file=sys.stderr)
    return 0


def cmd_metrics_list(settings: Settings, args: argparse.Namespace) -> int:
    print("org\texperiment\tmetrics")
    for (org, experiment), saved in sorted(_configs(settings).metrics.items()):
        if not args.org or org == args.org:
            print(f"{org}\t{experiment}\t{' '.join(saved.metrics)}")
    return 0


def cmd_metrics_rm(settings: Settings, args: argparse.Namespace) -> int:
    if (args.org, args.experiment) not in _configs(settings).metrics:
        print(f"sluice: no saved metrics for {args.org}/{args.experiment}", file=sys.stderr)
        return 1
    _write(settings, [(metrics_key(args.org, args.experiment), None)])
    return 0


def _write(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    from sluice.topics import ensure_topics

    async def write() -> None:
        await ensure_topics(settings)
        await write_records(settings.kafka_bootstrap, settings.registry_topic, records, kafka_security(settings))

    asyncio.run(write())
