"""The house's arrows point one way (pyproject.toml's import-linter contract): the commands and
dev tools above the gateway and the worker, which do not import each other, above the base
(settings, envelope, wire structs, routing, registry). The benchmarks and the product never
import the tests (a test double in production code, or a benchmark measuring a test's harness,
is how a layer starts to leak)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("commands", "services", "pipeline", "sluice")


def imported(path: Path) -> set[str]:
    """Top-level packages a file imports, wherever the import statement is (functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_layers_contract_is_kept() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_neither_the_product_nor_the_benchmarks_import_the_tests() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported(path) & {"tests", "bench"})
        for folder in (*PRODUCT, "bench")
        for path in (REPO / folder).rglob("*.py")
        if imported(path) & ({"tests", "bench"} if folder != "bench" else {"tests"})
    }
    assert offenders == {}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def late() -> None:\n    from tests.memory_sink import MemorySink\n")
    assert "tests" in imported(sample)
