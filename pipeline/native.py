"""The worker's per-event modules, compiled to C by mypyc where a C compiler is at hand.

Normalizing and processing run for every event and are plain Python, which the interpreter runs
one bytecode at a time. mypyc (part of mypy, which checks this code already) compiles the same
source, using its annotations, to a C extension; the worker then spends about a seventh less of
its time per event (``bench/worker_cpu.py``; figures in ``docs/benchmark-notes.md``).

The source stays the truth. ``pipeline.native.main()`` builds the modules in place (``make``
does, before ``run``, ``test`` and ``bench``) and writes a stamp: a hash of their sources and of
the interpreter. :func:`guard` runs when ``pipeline`` is imported and, unless the stamp matches
the sources beside it, makes those modules load from source — an edit since the build never
runs stale code, and no C compiler means pure Python, nothing worse. ``SLUICE_NATIVE=0`` asks
for the source too.

What compiling asks of a module (mypyc's rules), kept by ``tests/test_native.py``:

- no msgspec ``Struct`` class in it: mypyc drops a class's keywords (``array_like``,
  ``kw_only``), which would change what the struct means — structs live in modules that are
  not compiled (``pipeline.canonical``, ``pipeline.items``, ``pipeline.state``);
- its annotations hold at run time: a compiled function checks its arguments' types, and a
  wrong one raises ``TypeError`` (which the stage turns into a dead letter, like any error);
- its classes are closed: no attribute or method set from outside.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
"""Where the packages are (the repository, or site-packages in an image)."""

MODULES = (
    "pipeline.normalize",
    "pipeline.normalize.common",
    "pipeline.normalize.halo",
    "pipeline.normalize.posthog",
    "pipeline.normalize.segment",
    "pipeline.normalize.solute",
    "pipeline.normalize.traffical",
    "pipeline.normalize.xaiku",
    "pipeline.processor",
    "pipeline.stores",
    "pipeline.attribution",
    "pipeline.records",
    "pipeline.rules",
    "pipeline.batch",
)
GROUP = "pipeline.native"
"""mypyc's name for the shared library of the group (``pipeline/native__mypyc.*.so``)."""

STAMP = ROOT / "pipeline" / "native.stamp"


def source(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def fingerprint(modules: Sequence[str]) -> str:
    """What the compiled modules must have been built from: the sources of ``modules`` (theirs and
    those of the project's modules they import: mypyc compiles against their types) and this
    interpreter."""
    digest = hashlib.sha256(f"{platform.python_version()} {importlib.machinery.EXTENSION_SUFFIXES[0]}".encode())
    for module in modules:
        digest.update(module.encode() + b"\x00" + source(module).read_bytes())
    return digest.hexdigest()


def _built_from() -> list[str]:
    """:data:`MODULES` and the project's modules they import (read from their sources)."""
    return sorted(set(MODULES).union(*(_imported(module) for module in MODULES)))


def _imported(module: str) -> set[str]:
    """The project's modules that ``module`` imports by name."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(source(module).read_bytes())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] in ("pipeline", "sluice", "services")}


def fresh() -> bool:
    """The compiled modules beside the sources were built from them, by this interpreter. The
    stamp names the modules it hashed: a module that imports another since has changed itself.
    A module named in :data:`MODULES` since the build (it was hashed as an import) has no
    compiled form yet: not fresh."""
    try:
        digest, *modules = STAMP.read_text().split()
    except (OSError, ValueError):
        return False
    try:
        built = all(any(source(module).parent.glob(f"{source(module).stem}.*.so")) for module in MODULES)
        return built and set(MODULES) <= set(modules) and digest == fingerprint(modules)
    except OSError:  # a module it names is gone
        return False


def compiled(module: ModuleType) -> bool:
    """``module`` was loaded from a C extension (a compiled module), not from its source."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


class _FromSource(importlib.abc.MetaPathFinder):
    """Loads the packages' modules from their ``.py`` files, whatever is beside them (a module
    compiled by an earlier build too, which :data:`MODULES` may no longer name)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in _packages():
            return None
        file = source(fullname)
        if not file.is_file() or not any(file.parent.glob(f"{file.stem}.*.so")):
            return None  # nothing compiled beside it: the usual import
        package = [str(file.parent)] if file.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(fullname, file, submodule_search_locations=package)


def _packages() -> set[str]:
    return {module.split(".")[0] for module in MODULES}


def guard() -> None:
    """Load the modules from source unless their compiled form is fresh and wanted."""
    wanted = os.environ.get("SLUICE_NATIVE", "1") != "0"
    if not (wanted and fresh()) and not any(isinstance(finder, _FromSource) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FromSource())


def build() -> bool:
    """Compile :data:`MODULES` unless they are fresh; True when compiled modules are in place
    afterwards. A failure (no C compiler, say) is reported and leaves the source in use.

    The packages' sources are compiled in a copy, away from whatever else is beside them (in an
    image that is site-packages, which mypy would read as our own modules); the extensions are
    then copied in beside the sources."""
    if fresh():
        return True
    import shutil
    import subprocess
    import tempfile

    STAMP.unlink(missing_ok=True)
    modules = _built_from()
    stamp = fingerprint(modules)
    packages = sorted({module.split(".")[0] for module in modules})
    files = [str(source(module).relative_to(ROOT)) for module in MODULES]
    with tempfile.TemporaryDirectory(prefix="sluice-native-") as work:
        copy = Path(work) / "src"
        for package in packages:
            shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        options = ["--follow-imports=silent", "--ignore-missing-imports"]  # errors of the compiled modules only
        script = (
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='sluice-native', script_args=['build_ext', '--inplace', '--build-temp', {work!r}],\n"
            f"      ext_modules=mypycify({files + options!r}, opt_level='3', group_name={GROUP!r},\n"
            f"                           target_dir={work!r}))\n"
        )
        done = subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"pipeline.native: not compiled, the source will run:\n{done.stdout[-3000:]}{done.stderr[-3000:]}",
                  file=sys.stderr)  # fmt: skip
            return False
        for old in (extension for package in _packages() for extension in (ROOT / package).rglob("*.so")):
            old.unlink()  # an earlier build's, of modules that may not be compiled any more
        for extension in (extension for package in _packages() for extension in (copy / package).rglob("*.so")):
            shutil.copy2(extension, ROOT / extension.relative_to(copy))
    if _built_from() != modules or fingerprint(modules) != stamp:
        print("pipeline.native: the sources changed while compiling; the source will run", file=sys.stderr)
        return False
    STAMP.write_text("\n".join([stamp, *modules]) + "\n")
    return True


def main() -> None:
    print(f"pipeline.native: {'compiled' if build() else 'from source'} ({len(MODULES)} modules)")
