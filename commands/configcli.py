"""``sluice config put|list|rm`` (Traffical bundles) and ``sluice experiments put|list|rm`` (Xaiku).

Each command reads the registry topic once (to version what it writes), validates before it
writes anything, and writes records the gateways follow (:mod:`sluice.configs`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from sluice.configs import (
    ConfigError,
    TrafficalBundle,
    XaikuExperiment,
    as_record,
    bundle_key,
    bundle_record,
    experiment_key,
    experiment_record,
    load_bundle,
    load_experiments,
)
from sluice.kafkaconf import kafka_security
from sluice.registry import Registry
from sluice.registry_topic import read_registry, write_records
from sluice.settings import Settings
from sluice.topics import ensure_topics

Subparsers = Any  # argparse's _SubParsersAction is private
Command = Callable[[Settings, argparse.Namespace], int]


def add_config_commands(sub: Subparsers, experiments: Subparsers) -> None:
    """``config …`` under the top-level commands, ``put|list|rm`` beside ``experiments results``."""
    config = sub.add_parser(
        "config", help="Traffical config bundles, served at GET /v1/config/{projectId}?env="
    ).add_subparsers(required=True, metavar="ACTION")
    scope = ("--org", "--project", "--env")
    _action(
        config,
        "put",
        cmd_config_put,
        "load a bundle (checked against Traffical's schema); served within 2 s",
        scope,
        file="the bundle's JSON file, or - for stdin",
    )
    _action(config, "list", cmd_config_list, "the loaded bundles and their versions")
    _action(config, "rm", cmd_config_rm, "stop serving a bundle (the SDKs keep their last good one)", scope)
    _action(
        experiments,
        "put",
        cmd_experiments_put,
        'load Xaiku experiments {"experiments": {id: [variant, …]}}',
        ("--org",),
        file="the JSON file, or - for stdin; its experiments are added or replaced",
    )
    _action(experiments, "list", cmd_experiments_list, "the loaded experiments and their versions")
    rm = _action(experiments, "rm", cmd_experiments_rm, "stop serving experiments", ("--org",))
    rm.add_argument("experiment", nargs="+")


def _action(
    parent: Subparsers, name: str, run: Command, help: str, required: tuple[str, ...] = (), file: str = ""
) -> argparse.ArgumentParser:
    """One ACTION: ``required`` options (``--org`` alone is optional for a listing), a FILE."""
    parser: argparse.ArgumentParser = parent.add_parser(name, help=help)
    for option in required:
        parser.add_argument(option, required=True)
    if not required:
        parser.add_argument("--org", help="only this org's")
    if file:
        parser.add_argument("file", help=file)
    parser.set_defaults(run=run)
    return parser


def _read(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def _fail(message: object, code: int = 1) -> int:
    print(f"sluice: {message}", file=sys.stderr)
    return code


async def _snapshot(settings: Settings) -> Registry:
    await ensure_topics(settings)
    return await read_registry(settings.kafka_bootstrap, settings.registry_topic, security=kafka_security(settings))


def _write(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    asyncio.run(write_records(settings.kafka_bootstrap, settings.registry_topic, records, kafka_security(settings)))


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def cmd_config_put(settings: Settings, args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(_read(args.file), args.project, args.env)
    except (ConfigError, OSError) as exc:
        return _fail(exc, 2)
    registry = asyncio.run(_snapshot(settings))
    previous = registry.configs.bundle(args.org, args.project, args.env)
    record = bundle_record(args.org, args.project, args.env, bundle, previous)
    where = f"{args.org}/{args.project}/{args.env}"
    if record is None:
        print(f"config {where} unchanged (version {previous.version if previous else 0})", file=sys.stderr)
        return 0
    _write(settings, [as_record(record)])
    print(f"config {where} version {record.version}", file=sys.stderr)
    return 0


def cmd_config_list(settings: Settings, args: argparse.Namespace) -> int:
    registry = asyncio.run(_snapshot(settings))
    print("org\tproject\tenv\tversion\tbytes\tupdated_at")
    bundles: list[TrafficalBundle] = sorted(registry.configs.bundles.values(), key=lambda b: (b.org_id, b.project_id))
    for b in bundles:
        if not args.org or b.org_id == args.org:
            print(f"{b.org_id}\t{b.project_id}\t{b.env}\t{b.version}\t{len(b.bundle)}\t{_when(b.updated_at)}")
    return 0


def cmd_config_rm(settings: Settings, args: argparse.Namespace) -> int:
    registry = asyncio.run(_snapshot(settings))
    if registry.configs.bundle(args.org, args.project, args.env) is None:
        return _fail(f"no config for {args.org}/{args.project}/{args.env}")
    _write(settings, [(bundle_key(args.org, args.project, args.env), None)])
    print(f"removed config {args.org}/{args.project}/{args.env}", file=sys.stderr)
    return 0


def cmd_experiments_put(settings: Settings, args: argparse.Namespace) -> int:
    try:
        loaded = load_experiments(_read(args.file))
    except (ConfigError, OSError) as exc:
        return _fail(exc, 2)
    registry = asyncio.run(_snapshot(settings))
    current = registry.configs.experiments_of(args.org)
    changed = [
        record
        for experiment, variants in loaded.items()
        if (record := experiment_record(args.org, experiment, variants, current.get(experiment))) is not None
    ]
    if changed:
        _write(settings, [as_record(r) for r in changed])
    for record in changed:
        print(f"experiment {args.org}/{record.experiment_id} version {record.version}", file=sys.stderr)
    print(f"{len(changed)} of {len(loaded)} experiment(s) changed", file=sys.stderr)
    return 0


def cmd_experiments_list(settings: Settings, args: argparse.Namespace) -> int:
    registry = asyncio.run(_snapshot(settings))
    print("org\texperiment\tversion\tvariants\tupdated_at")
    for org in sorted(registry.configs.experiments):
        if args.org and org != args.org:
            continue
        experiment: XaikuExperiment
        for experiment in registry.configs.experiments_of(org).values():
            count = len(msgspec.json.decode(experiment.variants))
            print(f"{org}\t{experiment.experiment_id}\t{experiment.version}\t{count}\t{_when(experiment.updated_at)}")
    return 0


def cmd_experiments_rm(settings: Settings, args: argparse.Namespace) -> int:
    registry = asyncio.run(_snapshot(settings))
    known = registry.configs.experiments_of(args.org)
    missing = [e for e in args.experiment if e not in known]
    if missing:
        return _fail(f"no such experiment(s) in org {args.org}: {', '.join(missing)}")
    _write(settings, [(experiment_key(args.org, e), None) for e in args.experiment])
    print(f"removed {len(args.experiment)} experiment(s)", file=sys.stderr)
    return 0
