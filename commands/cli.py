"""``sluice``: the one command for every part (console script ``sluice``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import msgspec

from commands.configcli import add_config_commands
from commands.resultscli import add_results_commands
from sluice.kafkaconf import kafka_security
from sluice.registry import (
    SDK_PREFIX,
    ApiKey,
    KeyKind,
    Registry,
    key_record,
    new_identity_secret,
    new_key,
    org_record,
    parse_duration,
)
from sluice.registry_topic import read_registry, write_records
from sluice.sealing import new_master_key, sealer_from
from sluice.settings import Settings
from sluice.topics import ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        result: int = args.run(settings, args)
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    sub.add_parser("run", help="Kafka, gateway and one worker: the whole system on this machine").set_defaults(
        run=cmd_run
    )
    sub.add_parser("kafka", help="run the local Apache Kafka broker (KRaft)").set_defaults(run=cmd_kafka)
    gateway = sub.add_parser("gateway", help="run the HTTP gateway")
    gateway.add_argument(
        "--processes", type=int, help="processes sharing the port (SO_REUSEPORT); default SLUICE_GATEWAY_PROCESSES or 1"
    )
    gateway.set_defaults(run=cmd_gateway)
    worker = sub.add_parser("worker", help="run a stream-processing worker")
    worker.add_argument(
        "--processes", type=int,
        help="worker processes, each a member of the group (needs SLUICE_CLICKHOUSE_URL when more than one); "
        "process N serves health and metrics on SLUICE_WORKER_PORT + N; default SLUICE_WORKER_PROCESSES or 1",
    )  # fmt: skip
    worker.set_defaults(run=cmd_worker)
    sub.add_parser(
        "warehouse", help="serve the embedded warehouse over ClickHouse's HTTP interface (several workers share it)"
    ).set_defaults(run=cmd_warehouse)

    keys = sub.add_parser("keys", help="create, revoke and list API keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", help="create a key; prints the key alone on stdout")
    create.add_argument("--org", required=True)
    create.add_argument("--project", default="default")
    create.add_argument("--env", default="production")
    create.add_argument("--kind", choices=["publishable", "secret"], help="required unless --sdk (publishable then)")
    create.add_argument(
        "--sdk", choices=sorted(SDK_PREFIX),
        help="a key that SDK takes: a Segment write key (wk_…), a PostHog project token (phc_…)",
    )  # fmt: skip
    create.add_argument("--scope", action="append", default=[], help="repeatable, e.g. sdk:write")
    create.add_argument("--prefix", help="ab_live_, pk_, traffical_sk_… (default pk_ or sk_ by kind)")
    create.add_argument("--expires-in", help="30d, 12h, 15m…")
    create.add_argument(
        "--allowed-origin", action="append", default=[],
        help="repeatable; binds browsers only: a request without Origin passes (docs/security.md)",
    )  # fmt: skip
    create.set_defaults(run=cmd_keys_create)
    revoke = keys.add_parser("revoke", help="revoke a key, given the key itself or its id")
    revoke.add_argument("key")
    revoke.set_defaults(run=cmd_keys_revoke)
    listing = keys.add_parser("list", help="list keys (never their secret part)")
    listing.add_argument("--org")
    listing.set_defaults(run=cmd_keys_list)

    orgs = sub.add_parser("orgs", help="org settings").add_subparsers(required=True, metavar="ACTION")
    org_set = orgs.add_parser(
        "set", help="change an org's settings; prints the identity secret while verification is on"
    )  # fmt: skip
    org_set.add_argument("org")
    org_set.add_argument("--identity-verification", choices=["on", "off"])
    org_set.add_argument(
        "--rotate-identity-secret", action="store_true",
        help="replace the identity secret (prints the new one); tokens signed with the old one are refused "
        "once gateways read the change (within seconds)",
    )  # fmt: skip
    org_set.set_defaults(run=cmd_orgs_set)
    orgs.add_parser(
        "new-registry-key", help="print a fresh master key for SLUICE_REGISTRY_KEY (seals identity secrets)"
    ).set_defaults(run=cmd_orgs_new_registry_key)

    experiments = sub.add_parser("experiments", help="scorecards; Xaiku experiments to serve").add_subparsers(
        required=True, metavar="ACTION"
    )
    add_results_commands(experiments)
    add_config_commands(sub, experiments)

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters").add_subparsers(required=True, metavar="ACTION")
    dlq_list = dlq.add_parser("list", help="the newest dead letters with their reasons")
    dlq_list.add_argument("--org")
    dlq_list.add_argument("--limit", type=int, default=50)
    dlq_list.add_argument("--format", choices=["tsv", "json"], default="tsv")
    dlq_list.set_defaults(run=cmd_dlq_list)
    dlq_replay = dlq.add_parser("replay", help="re-submit dead letters to the raw topic")
    dlq_replay.add_argument("--id", action="append", default=[], help="a letter's id from `dlq list` (repeatable)")
    dlq_replay.add_argument("--org", help="every letter of this org")
    dlq_replay.add_argument(
        "--trust-identity", action="store_true",
        help="also re-submit letters that may change a user of an org that verifies identities (they carry no token)",
    )  # fmt: skip
    dlq_replay.set_defaults(run=cmd_dlq_replay)

    loadgen = sub.add_parser("loadgen", help="drive a gateway with a mix of the four families")
    loadgen.add_argument("--url", help="gateway base URL (default: this machine's gateway)")
    loadgen.add_argument("--key", required=True, help="a key every route accepts: publishable, scope sdk:write")
    loadgen.add_argument("--org", required=True, help="the key's org (to derive message ids for the truth)")
    loadgen.add_argument("--mix", default="halo,xaiku,solute,traffical", help="e.g. solute=3,traffical=1")
    loadgen.add_argument("--batch-size", type=int, default=50)
    loadgen.add_argument("--duplicate-rate", type=float, default=0.0)
    loadgen.add_argument("--invalid-rate", type=float, default=0.0)
    loadgen.add_argument("--rate", type=float, default=0.0, help="events/s to offer; 0: as fast as answered")
    loadgen.add_argument("--duration", type=float, default=10.0, help="seconds")
    loadgen.add_argument(
        "--identified-users", type=int, default=0,
        help="identified traffic: Solute tracks of this many users (--duplicate-rate: batches retried)",
    )  # fmt: skip
    loadgen.add_argument("--connections", type=int, default=32)
    loadgen.add_argument("--seed", type=int, default=1)
    loadgen.add_argument("--truth", type=Path, help="write every acknowledged message id here")
    loadgen.set_defaults(run=cmd_loadgen)

    query = sub.add_parser("query", help="run SQL on the configured warehouse")
    query.add_argument("sql")
    query.add_argument(
        "--format", help="a ClickHouse format name (default: PrettyCompact on a terminal, TabSeparated when piped)"
    )
    query.set_defaults(run=cmd_query)
    return parser


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from commands.devrun import run_all

    return run_all(settings)


def cmd_kafka(settings: Settings, args: argparse.Namespace) -> int:
    from commands.localkafka import LocalKafka, ensure_jars

    port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
    broker = LocalKafka(Path(settings.home) / "kafka", ensure_jars(), port=port)
    broker.start()
    stop = _stop_flag()
    try:
        broker.wait_ready()
        print(f"kafka ready on {broker.bootstrap}; log {broker.log_file}", file=sys.stderr)
        while not stop and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0


def _stop_flag() -> list[int]:
    """A list that gains the signal number on SIGINT/SIGTERM (truthy once stopping)."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    return received


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from services.gateway.app import run_gateway

    if args.processes:
        settings = msgspec.structs.replace(settings, gateway_processes=args.processes)
    run_gateway(settings)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.process import run_worker, run_worker_processes

    processes = args.processes or settings.worker_processes
    if processes > 1 and not settings.clickhouse_url:
        print("--processes above 1 needs SLUICE_CLICKHOUSE_URL: the embedded warehouse has one owner "
              "(run `sluice warehouse` and point the workers at it)", file=sys.stderr)  # fmt: skip
        return 2
    asyncio.run(ensure_topics(settings))
    if processes > 1:
        run_worker_processes(settings, processes)
    else:
        run_worker(settings)
    return 0


def cmd_warehouse(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.warehouse.serve import serve

    if not settings.warehouse_password:
        print(
            "sluice: set SLUICE_WAREHOUSE_PASSWORD (clients then use http://user:password@host:port/db)",
            file=sys.stderr,
        )
        return 2
    serve(
        settings.warehouse_path, settings.warehouse_host, settings.warehouse_port,
        settings.warehouse_user, settings.warehouse_password,
    )  # fmt: skip
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        expires = parse_duration(args.expires_in) if args.expires_in else None
        kind: KeyKind | None = args.kind or ("publishable" if args.sdk else None)
        if kind is None:
            raise ValueError("--kind is required (or --sdk segment|posthog, publishable by default)")
        prefix = args.prefix or (SDK_PREFIX[args.sdk] if args.sdk else None)
        key, record = new_key(
            args.org, kind, prefix=prefix, project_id=args.project, env=args.env,
            scopes=args.scope, expires_in=expires, allowed_origins=args.allowed_origin,
        )  # fmt: skip
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_write(settings, [key_record(record)]))
    print(key)
    return 0


def _read(settings: Settings, registry: Registry | None = None) -> Registry:
    return asyncio.run(
        read_registry(
            settings.kafka_bootstrap, settings.registry_topic, registry=registry, security=kafka_security(settings)
        )
    )


async def _write(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    await ensure_topics(settings)
    await write_records(settings.kafka_bootstrap, settings.registry_topic, records, kafka_security(settings))


def key_id(record: ApiKey) -> str:
    """The short public id of a key: the first 12 hex digits of its digest."""
    return record.digest[:12]


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from sluice.registry import hash_key

    registry = _read(settings)
    wanted = args.key
    matches = [k for k in registry.keys.values() if k.digest == hash_key(wanted) or key_id(k) == wanted]
    if len(matches) != 1:
        print("sluice: no such key", file=sys.stderr)
        return 1
    record = matches[0]
    record.revoked = True
    asyncio.run(_write(settings, [key_record(record)]))
    print(f"revoked {key_id(record)}", file=sys.stderr)
    return 0


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    registry = _read(settings)
    print("id\thint\torg\tproject\tenv\tkind\tscopes\texpires_at\tstatus")
    now = time.time()
    for record in sorted(registry.keys.values(), key=lambda k: k.created_at):
        if args.org and record.org_id != args.org:
            continue
        status = "revoked" if record.revoked else ("active" if record.usable(now) else "expired")
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.expires_at)) if record.expires_at else "-"
        print("\t".join([
            key_id(record), record.hint, record.org_id, record.project_id, record.env, record.kind,
            ",".join(record.scopes) or "-", expires, status,
        ]))  # fmt: skip
    return 0


def cmd_orgs_new_registry_key(settings: Settings, args: argparse.Namespace) -> int:
    print(new_master_key())
    return 0


def cmd_orgs_set(settings: Settings, args: argparse.Namespace) -> int:
    """Verification on or off, and the identity secret: made when verification first needs one,
    replaced on ``--rotate-identity-secret`` (the only way to retire a leaked one: a new registry
    key re-wraps the same secret)."""
    if args.identity_verification is None and not args.rotate_identity_secret:
        print("sluice: give --identity-verification on|off, --rotate-identity-secret, or both", file=sys.stderr)
        return 2
    sealer = sealer_from(settings.registry_key)
    registry = _read(settings, Registry(sealer))
    org = registry.org(args.org)
    recovering = args.rotate_identity_secret and sealer is not None  # a lost registry key: seal a new secret
    if org.identity_secret_sealed is not None and not org.identity_secret and not recovering:
        print("sluice: this org's identity secret is sealed: set SLUICE_REGISTRY_KEY to the key", file=sys.stderr)
        return 1
    if args.identity_verification is not None:
        org.identity_verification = args.identity_verification == "on"
    if args.rotate_identity_secret or (org.identity_verification and not org.identity_secret):
        org.identity_secret = new_identity_secret()
    if sealer is None and org.identity_secret:
        print("sluice: SLUICE_REGISTRY_KEY is not set: the identity secret is stored unsealed", file=sys.stderr)
    asyncio.run(_write(settings, [org_record(org, sealer)]))
    if org.identity_verification or args.rotate_identity_secret:
        print(org.identity_secret)
    return 0


def cmd_loadgen(settings: Settings, args: argparse.Namespace) -> int:
    import msgspec

    from commands.loadgen import Options, parse_mix, run

    try:
        mix = parse_mix(args.mix)
    except ValueError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    options = Options(
        url=(args.url or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/"), key=args.key,
        org=args.org, mix=mix, batch_size=args.batch_size, duplicate_rate=args.duplicate_rate,
        invalid_rate=args.invalid_rate, rate=args.rate, duration=args.duration, connections=args.connections,
        seed=args.seed, truth=args.truth, progress=sys.stderr.isatty(), identified_users=args.identified_users,
    )  # fmt: skip
    result = asyncio.run(run(options))
    print(msgspec.json.encode(result.summary()).decode())
    return 0


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    from commands.query import chosen_format
    from pipeline.warehouse import WarehouseError
    from pipeline.warehouse.remote import warehouse_for_cli

    try:
        fmt = chosen_format(args.format, sys.stdout.isatty())
        sys.stdout.buffer.write(warehouse_for_cli(settings).execute(args.sql, fmt))
    except (WarehouseError, ValueError) as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.dlq import list_letters
    from pipeline.warehouse import WarehouseError
    from pipeline.warehouse.remote import warehouse_for_cli

    try:
        sys.stdout.buffer.write(list_letters(warehouse_for_cli(settings), args.org, args.limit, args.format))
    except WarehouseError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.dlq import replay
    from pipeline.warehouse import WarehouseError
    from pipeline.warehouse.remote import warehouse_for_cli

    if not (args.id or args.org):
        print("sluice: say which letters: --id ID (repeatable) or --org ORG", file=sys.stderr)
        return 2
    try:
        registry = asyncio.run(read_registry(settings.kafka_bootstrap, settings.registry_topic,
                                             security=kafka_security(settings)))  # fmt: skip
        verified = frozenset(org for org, org_settings in registry.orgs.items() if org_settings.identity_verification)
        done = asyncio.run(replay(settings, warehouse_for_cli(settings), ids=args.id, org_id=args.org,
                                  verified_orgs=verified, trust_identity=args.trust_identity))  # fmt: skip
    except WarehouseError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    print(f"re-submitted {done.submitted} event(s) to {settings.raw_topic}", file=sys.stderr)
    if done.held:
        print(f"held back {len(done.held)} letter(s) that may change a user of an org that verifies identities "
              f"(their tokens were stripped); check them and add --trust-identity to send them: "
              f"{', '.join(done.held)}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
