"""Arrows between the top-level packages point one way: server -> models, server -> protocol,
never back. protocol/ (the wire contract and the clients, command line included) imports neither
server nor models, nor the server's heavy dependencies (numpy, onnxruntime); models/ never
imports server; and the server loads only models' run-time modules, never the
set-up tools (calibration and what only it uses).

Imports are read from the source with ``ast``, inside functions too (a lazy import is still an
arrow), so a module need not be importable, nor its imports installed, to be checked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "models", "protocol")
# A client installs without them: protocol/ must not need them, at run time or in its source.
SERVER_ONLY_DEPENDENCIES = ("numpy", "onnxruntime")
# Run once at set-up or for maintenance; the server must not load them at run time.
SET_UP_ONLY = (
    "models.yamnet.calibrate",
    "models.yamnet.audiofile",
    "models.yamnet.offline",
    "models.yamnet.variants",
    "models.yamnet.exact",
)
_DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Absolute names of every module ``source`` imports, wherever the import statement is:
    ``import a.b``, ``from a.b import c`` (yields ``a.b`` and ``a.b.c``: c may be a module),
    relative imports resolved against ``module``, and ``importlib.import_module("a.b")`` /
    ``__import__("a.b")`` with a literal name."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base:
                yield base
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}" if base else alias.name
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in _DYNAMIC_IMPORTERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield first.value


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line``-free list of "module imports name" for every forbidden import."""
    found = []
    for path in _sources(package):
        module = _module_name(path)
        names = imported_modules(
            path.read_text(encoding="utf-8"), module, path.name == "__init__.py"
        )
        for name in sorted(set(names)):
            if any(_is_within(name, target) for target in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_every_package_is_checked() -> None:
    for package in PACKAGES:
        assert _sources(package), f"no sources found under {package}/"
    assert (ROOT / "models/yamnet/calibrate.py") in _sources("models")


def test_models_never_import_the_server() -> None:
    assert violations("models", ("server",)) == []


def test_protocol_imports_neither_server_nor_models() -> None:
    assert violations("protocol", ("server", "models", *SERVER_ONLY_DEPENDENCIES)) == []


def test_the_command_line_client_is_checked() -> None:
    assert (ROOT / "protocol/cli.py") in _sources("protocol")


def test_the_server_loads_no_set_up_tool() -> None:
    assert violations("server", SET_UP_ONLY) == []


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import server.audio", "models.yamnet.x", {"server.audio"}),
        ("import server as s", "models.x", {"server"}),
        (
            "from server.audio import decode_file",
            "models.yamnet.x",
            {"server.audio", "server.audio.decode_file"},
        ),
        ("from server import runner", "models.x", {"server", "server.runner"}),
        (  # the lazy import calibrate.py used to have
            "def f():\n    from server.runner import OnnxRunner\n",
            "models.yamnet.calibrate",
            {"server.runner", "server.runner.OnnxRunner"},
        ),
        (
            "import importlib\nimportlib.import_module('server.app')",
            "m",
            {"importlib", "server.app"},
        ),
        ("__import__('server')", "models.x", {"server"}),
        ("from ..server import x", "models.yamnet.calibrate", {"models.server", "models.server.x"}),
        (
            "from . import labels",
            "models.yamnet.calibrate",
            {"models.yamnet", "models.yamnet.labels"},
        ),
        ("from .spec import *", "models.yamnet", {"models.yamnet.spec"}),
    ],
)
def test_the_checker_sees_every_kind_of_import(
    source: str, module: str, expected: set[str]
) -> None:
    is_package = module == "models.yamnet"
    assert set(imported_modules(source, module, is_package)) == expected


def test_importing_models_and_protocol_loads_no_server_module() -> None:
    """The same rule at run time, transitive imports included."""
    modules = [
        _module_name(path)
        for package in ("models", "protocol")
        for path in _sources(package)
        if path.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'server' or m.startswith('server.'))\n"
        "sys.exit(f'server modules loaded: {loaded}' if loaded else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_client_commands_load_neither_server_nor_its_dependencies() -> None:
    """``tympan analyze`` and ``tympan stream`` run from protocol.cli alone: building their
    parser and importing every protocol module loads no server module, numpy or onnxruntime."""
    modules = [_module_name(path) for path in _sources("protocol")]
    heavy = ("server", "models", *SERVER_ONLY_DEPENDENCIES)
    code = (
        "import argparse, importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from protocol.cli import add_client_commands\n"
        "add_client_commands(argparse.ArgumentParser().add_subparsers())\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
        "sys.exit(f'loaded: {loaded}' if loaded else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_starting_the_server_loads_no_set_up_tool() -> None:
    code = (
        "import sys\n"
        "import server.app, server.cli\n"
        f"loaded = sorted(set({SET_UP_ONLY!r}) & set(sys.modules))\n"
        "sys.exit(f'set-up tools loaded: {loaded}' if loaded else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
