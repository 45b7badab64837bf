"""Imports point one way: webhooks -> workers -> bridge, and webhooks -> bridge (DESIGN 2)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module `path` imports, at any depth of the file."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _files(package: str) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, package
    return files


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("bridge", {"flask", "werkzeug", "rq", "webhooks", "workers"}),
        ("workers", {"webhooks", "flask"}),
    ],
)
def test_packages_import_only_downwards(package: str, forbidden: set[str]) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_roots(path) & forbidden)
        for path in _files(package)
        if imported_roots(path) & forbidden
    }
    assert offenders == {}


def test_the_checker_sees_nested_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from flask import g\n    import rq.job\n")
    assert imported_roots(sample) == {"flask", "rq"}


def test_importing_every_bridge_module_loads_neither_flask_nor_rq() -> None:
    modules = [
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for path in _files("bridge")
        # env.py runs migrations when imported: Alembic loads it, nobody imports it.
        if "migrations" not in path.parts
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'flask', 'werkzeug', 'rq', 'webhooks', 'workers'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert len(modules) >= 15


def imported_modules(path: Path) -> set[str]:
    """The full dotted names of every module `path` imports (`from a.b import c` gives `a.b`)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "workers":
                modules.update(f"workers.{alias.name}" for alias in node.names)
            else:
                modules.add(node.module)
    return modules


def test_webhooks_take_only_enqueue_functions_from_workers() -> None:
    # DESIGN 2: webhooks -> workers (enqueue functions only). Jobs, the sweeper and the drain are
    # the worker process's; the web process hands work over and reads queue depths, nothing more.
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "workers"
        )
        for path in _files("webhooks")
    }
    assert {p: ms for p, ms in offenders.items() if set(ms) - {"workers.enqueue"}} == {}


def test_the_finer_checker_sees_submodules_imported_from_the_package(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from workers import queues\ndef f():\n    from workers.sweeper import x\n")
    assert imported_modules(sample) == {"workers.queues", "workers.sweeper"}
