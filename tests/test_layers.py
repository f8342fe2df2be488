"""The import graph of ``leased`` follows the layer map of docs/architecture.md.

The map is a table, layers from the bottom up, and its order is the rule: a
module may import only modules listed before it (lower layers, or earlier in
its own layer).  This test reads that table from the document itself, so the
document and the code cannot disagree for long: it walks every ``import``
in every module (at module level, inside functions and under
``TYPE_CHECKING``) and fails on an import that points up the table, on an
import cycle, and on a module the table does not place.  The client stack's
narrower rule (it loads only the facts and the wire format) and the pure
layers' promise (no trio, so the sans-I/O core runs without an event loop)
are checked here too, the latter by importing them with trio blocked.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "leased"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

PURE_LAYERS = ("facts", "formats (pure)", "pure logic")
"""The layers that promise no I/O and no trio (docs/architecture.md)."""

CLIENT_MAY_IMPORT = frozenset(
    {"leased.constants", "leased.errors", "leased.schema", "leased.protocol", "leased.text_forms"}
)
"""What the client stack loads besides itself: facts and the wire format."""

CLIENT_STILL_IMPORTS: dict[str, str] = {}
"""Exemptions from the client stack's rule, with the same stale check as below."""

KNOWN_WRONG_WAY: dict[tuple[str, str], str] = {}
"""Imports that point up the map today, each with the reason it is tolerated.

Empty is the goal.  An entry that no longer matches an import fails the test
too, so a fixed import cannot leave its exemption behind."""


def layer_map() -> list[tuple[str, str]]:
    """``(layer, module)`` rows of the layer-map table, in the table's order."""
    text = ARCHITECTURE.read_text()
    section = text.split("## The layer map", 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[str, str]] = []
    layer = ""
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        match = re.fullmatch(r"`([a-z_.]+)`", cells[1])
        if match is None:
            continue  # the header and the separator
        layer = cells[0] or layer
        rows.append((layer, f"leased.{match.group(1)}"))
    return rows


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(name: str, path: Path, known: set[str], *, top_level_only: bool = False) -> Iterator[str]:
    """Every ``leased`` module that ``name`` imports (``from leased import x`` names module ``leased.x``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if is_package(path) else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("leased"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("leased"):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def import_graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {
        name: set(imported_modules(name, path, known, top_level_only=top_level_only)) - {name}
        for name, path in modules.items()
    }


def placed(name: str) -> bool:
    """A package the map does not list, and a ``__main__``, only gather their own package's modules."""
    if name in {module for _, module in layer_map()}:
        return True
    return not (is_package(package_modules()[name]) or name.endswith(".__main__"))


def test_the_layer_map_is_read_from_the_document() -> None:
    rows = layer_map()
    names = [module for _, module in rows]
    assert len(names) == len(set(names)), "a module is listed twice"
    assert names[0] == "leased.constants"
    assert {layer for layer, _ in rows} >= set(PURE_LAYERS)


def test_every_module_has_a_place_in_the_layer_map() -> None:
    listed = {module for _, module in layer_map()}
    unplaced = sorted(name for name in package_modules() if placed(name) and name not in listed)
    assert not unplaced, f"add these to the layer map of docs/architecture.md: {unplaced}"
    missing = sorted(listed - set(package_modules()))
    assert not missing, f"the layer map lists modules that do not exist: {missing}"


def test_no_import_points_up_the_layer_map() -> None:
    position = {module: index for index, (_, module) in enumerate(layer_map())}
    upward: set[tuple[str, str]] = set()
    for importer, imported in import_graph().items():
        for target in imported:
            if not placed(importer):
                package = importer.removesuffix(".__main__")
                assert target.startswith(package + "."), f"{importer} reaches outside its package: {target}"
            elif target == "leased" or not placed(target):
                continue  # a package's __init__, which only re-exports its own modules
            elif position[target] > position[importer]:
                upward.add((importer, target))
    unexplained = sorted(upward - set(KNOWN_WRONG_WAY))
    assert not unexplained, f"these imports point up the layer map (importer, imported): {unexplained}"
    stale = sorted(set(KNOWN_WRONG_WAY) - upward)
    assert not stale, f"these exemptions no longer match an import; delete them: {stale}"


def test_there_is_no_import_cycle() -> None:
    """Module-level imports only: a deferred import cannot make a cycle at load time, but these can."""
    graph = import_graph(top_level_only=True)
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail(f"import cycle: {' -> '.join([*trail[trail.index(name) :], name])}")
        if name in done or name not in graph:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


CLIENT_STACK_OUTSIDE_THE_PACKAGE = frozenset({"leased.sanlock"})
"""Client-stack packages outside ``leased.client``: python3-sanlock's API (issue 15) keeps the client's rule."""


def in_client(name: str) -> bool:
    return (
        name == "leased.client"
        or name.startswith("leased.client.")
        or any(name == other or name.startswith(f"{other}.") for other in CLIENT_STACK_OUTSIDE_THE_PACKAGE)
    )


def test_the_client_stack_loads_only_facts_and_the_wire_format() -> None:
    foreign: set[str] = set()
    for importer, imported in import_graph().items():
        if in_client(importer):
            foreign |= {target for target in imported if target not in CLIENT_MAY_IMPORT and not in_client(target)}
    assert not foreign - set(CLIENT_STILL_IMPORTS), f"the client imports {sorted(foreign)}"
    assert not set(CLIENT_STILL_IMPORTS) - foreign, "an exemption no longer matches an import; delete it"


def test_the_pure_layers_import_without_trio() -> None:
    """Run in a fresh interpreter where ``import trio`` fails, so a deferred import counts too if it runs at load."""
    pure = [module for layer, module in layer_map() if layer in PURE_LAYERS]
    assert "leased.protocol" in pure and "leased.connection" in pure
    program = "\n".join(
        [
            "import sys",
            "sys.modules['trio'] = None  # any import of trio now raises ImportError",
            *(f"import {module}" for module in pure),
            "print('loaded', len([m for m in sys.modules if m.startswith('leased')]))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loaded ")
