"""Layering, read from the source with `ast`: every import, also those inside functions and
literal `importlib.import_module("...")` calls, is an edge between modules.

- edgeprune.host.*, firmware_bridge.* and edgeprune.cli.* each have no import cycle;
- the core (edgeprune.* outside edgeprune.host, edgeprune.fleet and the CLI modules, cli*/*_cli)
  imports neither edgeprune.host, edgeprune.fleet, firmware_bridge nor the host's heavy
  libraries (nor flwr);
- firmware_bridge (the board agent) never imports edgeprune.host;
- nothing but `python -m edgeprune` imports the CLI (edgeprune.cli): it is the top layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgeprune", "firmware_bridge")
HOST_ONLY = ("edgeprune.host", "firmware_bridge", "tensorflow", "paramiko", "serial")
HOST_ONLY += ("matplotlib", "scipy")
# The fleet (Flower apps, board and laptop side) sits on top of the core like the host does.
HOST_ONLY += ("flwr", "edgeprune.fleet")


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py file of `packages` under `root`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if not level:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules `name` imports anywhere in its source (a name imported from a package counts
    as its submodule when there is one)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
        elif isinstance(node, ast.Call) and node.args:  # import_module("a.b") / ("..c", pkg)
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            literal = [isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args]
            if called in ("import_module", "__import__") and all(literal[:2]):
                target = node.args[0].value
                level = len(target) - len(target.lstrip("."))
                if level and len(node.args) > 1:
                    source = _resolve(node.args[1].value, True, level, target[level:])
                else:
                    source = _resolve(name, is_package, level, target[level:] or None)
                found.add(source)
    found.discard(name)
    return found


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    found = modules(root, packages)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def cycles(graph: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """The import cycles among the modules under `prefix`, each as a closed path."""
    nodes = {m for m in graph if within(m, prefix)}
    edges = {m: sorted(graph[m] & nodes) for m in nodes}
    found, state, stack = [], {}, []  # state: 1 on the stack, 2 done

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(nodes):
        if module not in state:
            visit(module)
    return found


def is_core(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "edgeprune" or within(module, "edgeprune.host"):
        return False
    if within(module, "edgeprune.fleet"):
        return False
    return not any(p.startswith("cli") or p.endswith("_cli") for p in parts[1:])


def core_leaks(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(core module, what it imports) for every import of the host's from the core."""
    return {
        (module, target)
        for module, targets in graph.items()
        if is_core(module)
        for target in targets
        if any(within(target, banned) for banned in HOST_ONLY)
    }


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_the_packages(graph):
    assert "edgeprune.host.client" in graph and "firmware_bridge.agent" in graph
    assert "firmware_bridge.protocol" in graph["edgeprune.host.session"]


@pytest.mark.parametrize("prefix", ["edgeprune.host", "firmware_bridge", "edgeprune.cli"])
def test_no_import_cycles(graph, prefix):
    assert cycles(graph, prefix) == []


def test_the_core_does_not_import_the_host(graph):
    assert sorted(core_leaks(graph)) == [], "move what needs the host into edgeprune.host"


def test_the_agent_does_not_import_the_host(graph):
    leaks = sorted(
        (module, target)
        for module, targets in graph.items()
        if within(module, "firmware_bridge")
        for target in targets
        if within(target, "edgeprune.host")
    )
    assert leaks == []


def test_the_checks_find_planted_violations(tmp_path):
    """The checks above can fail: a tree with a lazy host cycle, a core module reaching the host
    and the agent importing it."""
    files = {
        "edgeprune/__init__.py": "",
        "edgeprune/host/__init__.py": "",
        "edgeprune/host/a.py": "from . import b\n",
        "edgeprune/host/b.py": "def f():\n    from .a import thing\n",
        "edgeprune/host/c.py": "import importlib\nimportlib.import_module('edgeprune.host.a')\n",
        "edgeprune/core.py": "def g():\n    from .host.c import x\n    import serial.tools\n",
        "edgeprune/cli.py": "from .host import a\n",
        "firmware_bridge/__init__.py": "",
        "firmware_bridge/agent.py": "def h():\n    from edgeprune.host import b\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    planted = import_graph(tmp_path)
    assert cycles(planted, "edgeprune.host") == [
        ["edgeprune.host.a", "edgeprune.host.b", "edgeprune.host.a"]
    ]
    assert planted["edgeprune.host.c"] == {"importlib", "edgeprune.host.a"}
    assert core_leaks(planted) == {
        ("edgeprune.core", "edgeprune.host.c"),
        ("edgeprune.core", "serial.tools"),
    }
    assert planted["firmware_bridge.agent"] == {"edgeprune.host.b"}


def test_only_the_entry_point_imports_the_cli(graph):
    callers = sorted(
        module
        for module, targets in graph.items()
        if not within(module, "edgeprune.cli") and module != "edgeprune.__main__"
        if any(within(target, "edgeprune.cli") for target in targets)
    )
    assert callers == [], "the CLI is a caller of the library, never called by it"
