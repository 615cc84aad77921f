"""The compiled per-event modules (``pipeline.native``): the same results as their source, and
never stale. Their tests run on whichever form is in use — compiled after ``make``."""

from __future__ import annotations

import ast
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from commands.loadgen import Generator, Options, _headers
from pipeline import native
from sluice.envelope import RawBatch
from tests.gateway_harness import harness

REPO = Path(__file__).resolve().parents[1]

HOSTILE: list[Any] = [
    None, True, 0, -1, 10**400, -(10**400), 1e308, 5e-324, "", "\x00", "é" * 300, "a" * 5000, [], {}, [None],
    {"layers": [{"policyId": 1}]}, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "2026-13-45",
    [{"policyId": "p", "allocationName": "a"}] * 3, {"": {"": [1, {"a": None}]}},
]  # fmt: skip

PROCESS = """
import asyncio, json, sys, tempfile
from pathlib import Path
import msgspec
from pipeline import native
from pipeline.batch import stores_on
from pipeline.canonical import to_rows
from pipeline.keyed import KeyedStage
from pipeline.processor import Processor
from pipeline.statestore import StateStore

def text(value):
    return None if value is None else value.decode("utf-8", "replace")

async def main(folder):
    # the worker's batch body on a real state store; a batch's commit applies its staged state
    state = StateStore(Path(folder) / "state", "t.state", "127.0.0.1:1")
    processor = Processor(stores_on(state, lambda cap: None), "t.keyed", raw_topic="t.raw")
    stage = KeyedStage(state, processor, None, None, "t.keyed", None, "t.raw", 2)
    values = msgspec.json.decode(open(sys.argv[1], "rb").read(), type=list[bytes])
    out = {"compiled": [m for m in native.MODULES if native.compiled(sys.modules[m])], "steps": []}
    for start in range(0, len(values), 7):
        records = [("t.raw", 0, start + n, value) for n, value in enumerate(values[start : start + 7])]
        writes = await stage.process(records, prepared=await stage.prepare(records))
        for items in writes.staged.values():
            state.apply(items, {})
        processor.release(writes)
        out["steps"].append({
            "events": to_rows(writes.events).decode(), "letters": [(d.reason, d.id, d.index) for d in writes.letters],
            "forwarded": {p: [(q, text(v)) for q, v in fw] for p, fw in writes.forward.items()},
            "staged": {p: [(text(k), text(v)) for k, v in items] for p, items in writes.staged.items()},
            "tables": [[table, msgspec.json.encode(rows).decode()] for table, rows in writes.tables()],
            "duplicates": dict(writes.duplicates), "capped": dict(writes.capped),
        })
    await state.stop()
    return out

with tempfile.TemporaryDirectory() as folder:
    print(json.dumps(asyncio.run(main(folder))))
"""


def mutate(value: Any, rng: random.Random) -> Any:
    """``value`` with one place somewhere inside replaced by a hostile value."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        at = rng.randrange(len(value))
        return [*value[:at], mutate(value[at], rng), *value[at + 1 :]]
    return rng.choice(HOSTILE)


async def raw_values(requests: int) -> list[bytes]:
    """The raw records the gateway makes of the load generator's mix, half of the requests
    mutated; and copies of a third of the records with events mutated past the gateway's checks
    (what a gateway of another version, or a bug, could let through)."""
    rng = random.Random(11)
    async with harness() as gw:
        key = gw.key(scopes=("sdk:write",))
        generator = Generator(Options(url="", key=key, org="acme", batch_size=10, rate=0.0, duration=0,
                                      connections=1, seed=5, progress=False, duplicate_rate=0.1))  # fmt: skip
        for n in range(requests):
            family, path, body, _ids = generator.request()
            if n % 2:
                body = msgspec.json.encode(mutate(msgspec.json.decode(body), rng))
            await gw.post(path, body, **_headers(family, key))
        values = [value for topic, _, value in gw.sink.records if topic == gw.gateway.settings.raw_topic]
    for value in values[::3]:
        batch = msgspec.json.decode(value, type=RawBatch)
        events = [msgspec.Raw(msgspec.json.encode(mutate(msgspec.json.decode(event), rng))) for event in batch.events]
        values.append(msgspec.json.encode(msgspec.structs.replace(batch, events=events)))
    return values


def processed(corpus: Path, native_wanted: bool) -> dict[str, Any]:
    env = {"SLUICE_NATIVE": "1" if native_wanted else "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PROCESS, str(corpus)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not native.fresh(), reason="the modules are not compiled here (make native)")
async def test_compiled_modules_give_what_their_source_gives_on_hostile_and_ordinary_events(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.json"
    values = await raw_values(400)
    corpus.write_bytes(msgspec.json.encode(values))
    compiled, source = processed(corpus, True), processed(corpus, False)
    assert compiled.pop("compiled") == list(native.MODULES)
    assert source.pop("compiled") == []
    steps = compiled["steps"]
    assert sum(len(step["letters"]) for step in steps) > 10, "the corpus has invalid events"
    assert sum(step["events"].count('"message_id"') for step in steps) > 1000, "and valid ones"
    for n, (ours, theirs) in enumerate(zip(steps, source["steps"], strict=True)):
        assert ours == theirs, f"step {n}"


def test_no_compiled_module_defines_a_struct() -> None:
    """mypyc drops a class's keywords (``array_like``, ``kw_only``…): a Struct must not be compiled."""
    for module in native.MODULES:
        for node in ast.walk(ast.parse(native.source(module).read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                assert not any("Struct" in base for base in bases), f"{module}.{node.name} is a Struct"


@pytest.mark.skipif(not native.fresh(), reason="the modules are not compiled here (make native)")
def test_an_edited_source_runs_as_source_until_it_is_compiled_again(tmp_path: Path) -> None:
    for package in ("pipeline", "sluice"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    check = "import pipeline.processor as p; from pipeline import native; print(native.compiled(p))"

    def compiled() -> str:
        done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, check=True,
                              env={"PATH": "/usr/bin:/bin"})  # fmt: skip
        return done.stdout.strip()

    assert compiled() == "True"
    with open(tmp_path / "pipeline" / "processor.py", "a") as source:
        source.write("\n# an edit\n")
    assert compiled() == "False"
