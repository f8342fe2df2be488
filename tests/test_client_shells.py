"""The client's shells may not drift apart: every awaitable shell mirrors the blocking one.

:mod:`leased.client.blocking`, :mod:`leased.client.trio_shell` and
:mod:`leased.client.asyncio_shell` drive the same sans-I/O exchanges, and
each public method is written once per shell.  Nothing but this test keeps
the copies alike.  For every pair of classes of an awaitable shell and the
blocking one (``Client``/``AsyncClient``, ``Registration``/``AsyncRegistration``,
``EventChannel``/``AsyncEventChannel``, and the same with ``Asyncio``) it
compares:

* the public names (methods, properties, context-manager dunders, ``__init__``
  and the public attributes set on ``self``), in the blocking shell's terms;
* each member's kind: a method of an awaitable shell is ``async def``
  (``__init__`` aside), a property stays a property;
* each method's signature: parameter names, kinds, defaults and annotation
  strings, with the pair's names mapped (``AsyncRegistration`` ->
  ``Registration``);
* each method's docstring, names mapped the same way;
* each method's body, through the AST: the awaitable method with ``async
  def`` -> ``def``, ``await x`` -> ``x``, ``async with``/``for`` -> ``with``/
  ``for`` and the shell's names mapped must dump to the blocking method's AST.

Deliberate differences live in :data:`EXEMPT`, one line each with its reason.
An entry that no longer matches a difference fails the test too, so the table
never keeps stale excuses.  Private helpers (``_run``, ``_one_shot``, the
connections) are not compared: they are where the transports differ.

A new shell over the same core is one more :class:`Shell` row in
:data:`SHELLS`, with its names and its own exemptions; asyncio's (issue 15)
is the second.  The two awaitable shells are also compared with each other
(:func:`test_awaitable_shells_are_twins`), private helpers included, with
their own short table :data:`TWINS_EXEMPT`: they differ only in their
connection classes and where the event channel touches the stream.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

import pytest

from leased.client import blocking


@dataclass(frozen=True)
class Shell:
    """An awaitable shell, and how its names map to the blocking shell's."""

    name: str
    module: str
    renames: Mapping[str, str]
    """This shell's identifier -> the blocking shell's, for classes, connections and members."""

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


TRIO = Shell(
    "trio",
    "leased.client.trio_shell",
    {
        "AsyncClient": "Client",
        "AsyncRegistration": "Registration",
        "AsyncEventChannel": "EventChannel",
        "AsyncHealthChannel": "HealthChannel",
        "_AsyncConnection": "_SyncConnection",
        "__aenter__": "__enter__",
        "__aexit__": "__exit__",
        "aclose": "close",
    },
)

ASYNCIO = Shell(
    "asyncio",
    "leased.client.asyncio_shell",
    {
        "AsyncioClient": "Client",
        "AsyncioRegistration": "Registration",
        "AsyncioEventChannel": "EventChannel",
        "AsyncioHealthChannel": "HealthChannel",
        "_AsyncioConnection": "_SyncConnection",
        "__aenter__": "__enter__",
        "__aexit__": "__exit__",
        "aclose": "close",
    },
)

SHELLS = [TRIO, ASYNCIO]
"""Every awaitable shell: trio's, and asyncio's (issue 15)."""

CLASSES = ["Client", "Registration", "EventChannel", "HealthChannel"]
"""The blocking shell's public classes; each shell has one twin of each."""

EXEMPT: dict[tuple[str, str, str, str], str] = {
    # (shell, blocking class, member in the blocking shell's terms, aspect): reason
    ("trio", "Client", "register", "kind"): "plain def: it returns an un-opened registration, `async with` opens it",
    ("trio", "Client", "register", "docstring"): "says how to use the un-opened registration with `async with`",
    ("trio", "Client", "register", "body"): "returns AsyncRegistration(self); AsyncRegistration.open registers",
    ("trio", "Registration", "__init__", "signature"): "takes the client (opened later), not a registered connection",
    ("trio", "Registration", "__init__", "body"): "keeps the client and no connection until open()",
    (
        "trio",
        "Registration",
        "__enter__",
        "body",
    ): "__aenter__ opens (registers) the connection; __enter__ has it already",
    ("trio", "Registration", "open", "missing"): "only the trio registration is made un-opened (see Client.register)",
    ("trio", "Registration", "close", "body"): "a trio registration may never have been opened",
    ("trio", "Registration", "broken", "body"): "a trio registration may never have been opened",
    ("trio", "Registration", "closed", "missing"): "blocking only: a socket's fileno() == -1; not offered on trio",
    ("trio", "Registration", "fileno", "missing"): "blocking only: for select/poll loops; trio waits on the stream",
    (
        "trio",
        "EventChannel",
        "get_events",
        "missing",
    ): "blocking: returns what has arrived without waiting (python3-sanlock)",
    ("trio", "EventChannel", "receive", "missing"): "trio: waits for the next event, safe to cancel",
    (
        "trio",
        "EventChannel",
        "fileno",
        "missing",
    ): "blocking only: to poll before get_events(); trio waits in receive()",
    (
        "trio",
        "EventChannel",
        "close",
        "body",
    ): "socket vs trio stream; the blocking close returns early if closed (trio's does not)",
    ("trio", "HealthChannel", "receive", "body"): "socket.recv with the client's timeout vs trio's receive_some",
    ("trio", "HealthChannel", "fileno", "missing"): "blocking only: for select/poll loops; trio waits in receive()",
    # The asyncio shell is the trio shell's twin (test_awaitable_shells_are_twins), so it
    # differs from the blocking shell exactly where the trio shell does, for the same reasons.
    ("asyncio", "Client", "register", "kind"): "plain def: it returns an un-opened registration, `async with` opens it",
    ("asyncio", "Client", "register", "docstring"): "says how to use the un-opened registration with `async with`",
    ("asyncio", "Client", "register", "body"): "returns AsyncioRegistration(self); AsyncioRegistration.open registers",
    ("asyncio", "Registration", "__init__", "signature"): "takes the client (opened later), not a registered one",
    ("asyncio", "Registration", "__init__", "body"): "keeps the client and no connection until open()",
    (
        "asyncio",
        "Registration",
        "__enter__",
        "body",
    ): "__aenter__ opens (registers) the connection; __enter__ has it already",
    ("asyncio", "Registration", "open", "missing"): "as trio's: the registration is made un-opened (Client.register)",
    ("asyncio", "Registration", "close", "body"): "an asyncio registration may never have been opened",
    ("asyncio", "Registration", "broken", "body"): "an asyncio registration may never have been opened",
    ("asyncio", "Registration", "closed", "missing"): "blocking only: a socket's fileno() == -1; not on asyncio",
    ("asyncio", "Registration", "fileno", "missing"): "blocking only: for select/poll loops; asyncio awaits",
    (
        "asyncio",
        "EventChannel",
        "get_events",
        "missing",
    ): "blocking: returns what has arrived without waiting (python3-sanlock)",
    ("asyncio", "EventChannel", "receive", "missing"): "asyncio (as trio): waits for the next event, safe to cancel",
    (
        "asyncio",
        "EventChannel",
        "fileno",
        "missing",
    ): "blocking only: to poll before get_events(); asyncio waits in receive()",
    (
        "asyncio",
        "EventChannel",
        "close",
        "body",
    ): "socket vs asyncio stream; the blocking close returns early if closed (asyncio's does not)",
    ("asyncio", "HealthChannel", "receive", "body"): "socket.recv with the client's timeout vs asyncio's reader",
    ("asyncio", "HealthChannel", "fileno", "missing"): "blocking only: for select/poll loops; asyncio awaits",
}

IGNORED_DUNDERS = frozenset({"__init_subclass__", "__class_getitem__"})


# --------------------------------------------------------------------------
# Reading a class


@dataclass(frozen=True)
class Member:
    name: str
    kind: str
    """``method``, ``async method``, ``property`` or ``attribute``."""
    function: Callable[..., object] | None = None


def members(cls: type) -> dict[str, Member]:
    """The public members a class defines itself, and the public attributes its methods set on self."""
    found: dict[str, Member] = {}
    for name, value in vars(cls).items():
        public = not name.startswith("_") or (name.startswith("__") and name.endswith("__"))
        if not public or name in IGNORED_DUNDERS:
            continue
        if isinstance(value, property):
            assert value.fget is not None
            found[name] = Member(name, "property", value.fget)
        elif inspect.isfunction(value):
            kind = "async method" if inspect.iscoroutinefunction(value) else "method"
            found[name] = Member(name, kind, value)
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls)))):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(item, ast.Attribute)
                    and isinstance(item.value, ast.Name)
                    and item.value.id == "self"
                    and not item.attr.startswith("_")
                ):
                    found.setdefault(item.attr, Member(item.attr, "attribute"))
    return found


def rename_text(text: str, renames: Mapping[str, str]) -> str:
    """``text`` with every identifier of ``renames`` replaced by its blocking twin."""
    if not renames:
        return text
    pattern = r"(?<![\w.])(" + "|".join(re.escape(name) for name in sorted(renames, key=len, reverse=True)) + r")\b"
    return re.sub(pattern, lambda m: renames[m.group(1)], text)


def signature(function: Callable[..., object], renames: Mapping[str, str]) -> list[str]:
    sig = inspect.signature(function)
    lines = []
    for p in sig.parameters.values():
        annotation = "" if p.annotation is p.empty else f": {rename_text(str(p.annotation), renames)}"
        default = "" if p.default is p.empty else f" = {p.default!r}"
        lines.append(f"{p.name}{annotation}{default}  ({p.kind.description})")
    return [*lines, f"-> {rename_text(str(sig.return_annotation), renames)}"]


class _Unasync(ast.NodeTransformer):
    """An awaitable method's AST in the blocking shell's terms."""

    def __init__(self, renames: Mapping[str, str]) -> None:
        self.renames = renames

    def _visit(self, node: ast.AST) -> ast.AST:
        result = self.visit(node)
        assert isinstance(result, ast.AST)
        return result

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self._visit(node.value)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        fields = {name: getattr(node, name) for name in node._fields}
        return self._visit(ast.copy_location(ast.FunctionDef(**fields), node))

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        return self._visit(
            ast.copy_location(ast.With(items=node.items, body=node.body, type_comment=node.type_comment), node)
        )

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        fields = {name: getattr(node, name) for name in node._fields}
        return self._visit(ast.copy_location(ast.For(**fields), node))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self.renames.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.renames.get(node.id, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node.attr = self.renames.get(node.attr, node.attr)
        return self.generic_visit(node)


def body(function: Callable[..., object], renames: Mapping[str, str]) -> ast.Module:
    """The function's statements without its docstring, in the blocking shell's terms."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef)
    statements = definition.body
    if statements and isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
        statements = statements[1:]
    module = _Unasync(renames).visit(ast.Module(body=statements, type_ignores=[]))
    assert isinstance(module, ast.Module)
    return module


# --------------------------------------------------------------------------
# Comparing a pair


def differences(shell: Shell, blocking_cls: type, shell_cls: type) -> dict[tuple[str, str], str]:
    """Every difference between the pair, keyed by (member in the blocking shell's terms, aspect)."""
    renames = shell.renames
    ours = members(blocking_cls)
    theirs = {renames.get(name, name): member for name, member in members(shell_cls).items()}
    found: dict[tuple[str, str], str] = {}
    for name in sorted(ours.keys() ^ theirs.keys()):
        side = shell_cls.__name__ if name in ours else blocking_cls.__name__
        found[name, "missing"] = f"{side} has no {name!r}"
    for name in sorted(ours.keys() & theirs.keys()):
        mine, twin = ours[name], theirs[name]
        expected = mine.kind
        if mine.kind == "method" and name != "__init__":
            expected = "async method"
        if twin.kind != expected:
            found[name, "kind"] = f"{shell_cls.__name__}.{name} is a {twin.kind}, expected: {expected}"
        if mine.function is None or twin.function is None:
            continue
        sig_a, sig_b = signature(mine.function, {}), signature(twin.function, renames)
        if sig_a != sig_b:
            found[name, "signature"] = _diff(sig_a, sig_b, blocking_cls, shell_cls, name)
        doc_a = inspect.getdoc(mine.function) or ""
        doc_b = rename_text(inspect.getdoc(twin.function) or "", renames)
        if doc_a != doc_b:
            found[name, "docstring"] = _diff(doc_a.splitlines(), doc_b.splitlines(), blocking_cls, shell_cls, name)
        body_a, body_b = body(mine.function, {}), body(twin.function, renames)
        if ast.dump(body_a) != ast.dump(body_b):
            lines_a, lines_b = ast.unparse(body_a).splitlines(), ast.unparse(body_b).splitlines()
            found[name, "body"] = _diff(lines_a, lines_b, blocking_cls, shell_cls, name)
    return found


def _diff(a: list[str], b: list[str], blocking_cls: type, shell_cls: type, name: str) -> str:
    lines = difflib.unified_diff(a, b, f"{blocking_cls.__name__}.{name}", f"{shell_cls.__name__}.{name}", lineterm="")
    return "\n".join(lines)


PAIRS = [pytest.param(shell, name, id=f"{shell.name}-{name}") for shell in SHELLS for name in CLASSES]


@pytest.mark.parametrize(("shell", "class_name"), PAIRS)
def test_shells_agree(shell: Shell, class_name: str) -> None:
    shell_names = {mine: theirs for theirs, mine in shell.renames.items()}
    blocking_cls = getattr(blocking, class_name)
    shell_cls = getattr(shell.load(), shell_names[class_name])
    found = differences(shell, blocking_cls, shell_cls)
    exempt = {key[2:]: reason for key, reason in EXEMPT.items() if key[:2] == (shell.name, class_name)}
    drift = [
        f"{name} ({aspect}):\n{detail}" for (name, aspect), detail in found.items() if (name, aspect) not in exempt
    ]
    stale = [f"{name} ({aspect}): {reason}" for (name, aspect), reason in exempt.items() if (name, aspect) not in found]
    report = []
    if drift:
        report.append(
            "the shells drifted apart; make them agree or add a reasoned EXEMPT entry:\n\n" + "\n\n".join(drift)
        )
    if stale:
        report.append("EXEMPT entries that no longer match a difference; remove them:\n" + "\n".join(stale))
    assert not report, "\n\n".join(report)


TWINS = (TRIO, ASYNCIO)
"""Two awaitable shells compared with each other, private helpers included."""

TWINS_EXEMPT: dict[tuple[str, str, str], str] = {
    # (blocking class, member in the blocking shell's terms, aspect): reason
    ("EventChannel", "receive", "body"): "trio reads stream.receive_some; asyncio its connection's reader",
    (
        "HealthChannel",
        "receive",
        "body",
    ): "trio's receive_some and errors; asyncio's reader, OSError",
    (
        "EventChannel",
        "close",
        "body",
    ): "the end mark: trio's send_all, its stream errors; asyncio's write+drain, OSError",
}


def functions(cls: type, renames: Mapping[str, str]) -> dict[str, Callable[..., object]]:
    """Every function a class defines itself, private ones too, by its name in the blocking shell's terms."""
    return {
        renames.get(name, name): value
        for name, value in vars(cls).items()
        if name not in IGNORED_DUNDERS and (inspect.isfunction(value) or isinstance(value, property))
        for value in [value.fget if isinstance(value, property) else value]
        if value is not None
    }


@pytest.mark.parametrize("class_name", CLASSES)
def test_awaitable_shells_are_twins(class_name: str) -> None:
    """The asyncio shell is the trio shell with another transport: every method alike, ``_run`` and ``_one_shot`` too.

    Only the connection classes differ.  So what holds for trio's calls (the
    lock across a whole call, when a connection turns broken) holds for
    asyncio's, wherever the connection does not decide it.
    """
    first, second = TWINS
    names = {shell.name: {mine: theirs for theirs, mine in shell.renames.items()}[class_name] for shell in TWINS}
    ours = functions(getattr(first.load(), names[first.name]), first.renames)
    theirs = functions(getattr(second.load(), names[second.name]), second.renames)
    found: dict[tuple[str, str], str] = {}
    for name in sorted(ours.keys() ^ theirs.keys()):
        found[name, "missing"] = f"only one of the {first.name} and {second.name} shells has {name!r}"
    for name in sorted(ours.keys() & theirs.keys()):
        a, b = ours[name], theirs[name]
        if inspect.iscoroutinefunction(a) != inspect.iscoroutinefunction(b):
            found[name, "kind"] = f"{name}: async in one shell only"
        if signature(a, first.renames) != signature(b, second.renames):
            found[name, "signature"] = "\n".join(signature(a, first.renames) + signature(b, second.renames))
        if rename_text(inspect.getdoc(a) or "", first.renames) != rename_text(inspect.getdoc(b) or "", second.renames):
            found[name, "docstring"] = f"{name}: docstrings differ"
        body_a, body_b = body(a, first.renames), body(b, second.renames)
        if ast.dump(body_a) != ast.dump(body_b):
            lines = difflib.unified_diff(
                ast.unparse(body_a).splitlines(), ast.unparse(body_b).splitlines(), first.name, second.name, lineterm=""
            )
            found[name, "body"] = "\n".join(lines)
    exempt = {key[1:]: reason for key, reason in TWINS_EXEMPT.items() if key[0] == class_name}
    drift = [
        f"{name} ({aspect}):\n{detail}" for (name, aspect), detail in found.items() if (name, aspect) not in exempt
    ]
    stale = [f"{name} ({aspect}): {reason}" for (name, aspect), reason in exempt.items() if (name, aspect) not in found]
    assert not drift, "the trio and asyncio shells drifted apart:\n\n" + "\n\n".join(drift)
    assert not stale, "TWINS_EXEMPT entries that no longer match a difference; remove them:\n" + "\n".join(stale)


def test_exemptions_name_known_shells_and_classes() -> None:
    shells = {shell.name for shell in SHELLS}
    aspects = {"missing", "kind", "signature", "docstring", "body"}
    for shell_name, class_name, _, aspect in EXEMPT:
        assert shell_name in shells and class_name in CLASSES and aspect in aspects


def test_normalising_sees_through_await_and_names() -> None:
    """The AST normaliser itself: an awaitable twin written right compares equal, a changed one does not."""
    sync = "def close(self) -> None:\n    with self._conn.lock:\n        self._conn.close()\n"
    twin = "async def aclose(self) -> None:\n    async with self._conn.lock:\n        await self._conn.aclose()\n"
    other = "async def aclose(self) -> None:\n    async with self._conn.lock:\n        await self._conn.send()\n"
    dump = {src: ast.dump(_Unasync(TRIO.renames).visit(ast.parse(src))) for src in (twin, other)}
    assert dump[twin] == ast.dump(ast.parse(sync))
    assert dump[other] != ast.dump(ast.parse(sync))


def test_importing_the_client_loads_no_trio_and_no_daemon_code() -> None:
    """``import leased.client`` loads the blocking shell and the wire format only; the trio shell on first use."""
    code = (
        "import sys, leased.client\n"
        "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('leased')))\n"
        "leased.client.AsyncClient\n"
        "print('trio' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    loaded = set(ast.literal_eval(out[0]))
    allowed = {"leased", "leased.constants", "leased.errors", "leased.schema", "leased.protocol", "leased.text_forms"}
    assert {"leased.client", "leased.client.blocking"} <= loaded
    assert not {m for m in loaded if m not in allowed and not m.startswith("leased.client")}, loaded
    assert "trio" not in loaded and "leased.client.trio_shell" not in loaded
    assert out[1] == "True"


def test_the_asyncio_shell_loads_no_trio() -> None:
    """An asyncio program gets its client with trio not installed: importing trio here would fail."""
    code = (
        "import sys\n"
        "sys.modules['trio'] = None  # any import of trio now raises ImportError\n"
        "from leased.client import AsyncioClient, AsyncioEventChannel, AsyncioRegistration\n"
        "print(AsyncioClient.__module__, 'leased.client.trio_shell' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["leased.client.asyncio_shell", "False"]


WIRE = {"leased.constants", "leased.errors", "leased.schema", "leased.protocol", "leased.text_forms"}
ALLOWED_IMPORTS = {
    "leased.client.results": WIRE,
    "leased.client.waiting": WIRE | {"leased.client.results"},
    "leased.client.exchanges": WIRE | {"leased.client.results"},
    "leased.client.blocking": WIRE | {"leased.client.results", "leased.client.waiting", "leased.client.exchanges"},
    **{
        shell.module: WIRE | {"leased.client.results", "leased.client.waiting", "leased.client.exchanges"}
        for shell in SHELLS
    },
}


@pytest.mark.parametrize("module", sorted(ALLOWED_IMPORTS))
def test_client_modules_import_only_downward(module: str) -> None:
    """The core imports no shell and no shell another: every import of leased, at any depth of the file."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name.startswith("leased")} <= ALLOWED_IMPORTS[module]
