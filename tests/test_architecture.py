"""The import and call rules of ``docs/ARCHITECTURE.md``, checked on the source (AST), so they cannot rot.

- The pure cores (wire protocol, batch decoder, planner, orchestrator) import no I/O: no sockets,
  event loop, HTTP, database or processes. They are state machines and functions over bytes; the shells
  around them do the I/O.
- Exactly one place sends a plan's actions to the feed: the orchestrator. Everything else asks it
  (``Orchestrator.apply``), so every change of plan reaches the audit log, the subscriptions table, the
  tracker, the eviction marks and the metrics the same way.
- Lower layers never import higher ones: nothing below the service imports ``tickgate.service`` or
  ``tickgate.api``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tickgate"

PURE = (
    "dhan/protocol.py",
    "dhan/batch.py",
    "planner",
    "orchestrator.py",
    "sim/core.py",
    "feed/watchdog.py",
    "dhan/budget.py",
    "analytics/black76.py",
    "analytics/chain.py",
    "schedule/sessions.py",
)
IO_MODULES = frozenset(
    {
        "asyncio",
        "socket",
        "ssl",
        "select",
        "selectors",
        "subprocess",
        "threading",
        "multiprocessing",
        "websockets",
        "httpx",
        "urllib.request",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "sqlite3",
        "fastapi",
        "starlette",
        "uvicorn",
    }
)
# Below the service: may not import tickgate.service / tickgate.api (the layers that use them).
LOWER = (
    "dhan",
    "instruments",
    "planner",
    "chains",
    "feed",
    "store",
    "schedule",
    "sim",
    "orchestrator.py",
    "clock.py",
    "accounts.py",
)
FEED_LIKE = ("feed", "_feed", "sink", "_sink", "manager")


def modules(rel: str) -> list[Path]:
    path = SRC / rel
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import, including function-local ones."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def is_io(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in IO_MODULES)


def import_offenders(rels: tuple[str, ...], forbidden: Callable[[str], bool]) -> list[str]:
    """``file:line: module`` for every import of a forbidden module in the files under ``rels``."""
    return [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for rel in rels
        for path in modules(rel)
        for line, module in imported(ast.parse(path.read_text(encoding="utf-8")))
        if forbidden(module)
    ]


def test_pure_cores_import_no_io() -> None:
    offenders = import_offenders(PURE, is_io)
    assert offenders == [], "a pure core imports I/O:\n" + "\n".join(offenders)


def test_io_detection_can_fail() -> None:
    tree = ast.parse("import asyncio\nfrom websockets.asyncio.server import serve\nimport numpy\n")
    assert [m for _, m in imported(tree) if is_io(m)] == ["asyncio", "websockets.asyncio.server"]


def execute_calls(tree: ast.Module) -> list[int]:
    """Lines calling ``<feed-like>.execute(...)``: a plan's actions sent to the feed."""
    lines = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr == "execute":
            receiver = func.value
            name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
            if name in FEED_LIKE:
                lines.append(node.lineno)
    return lines


def test_only_the_orchestrator_sends_actions_to_the_feed() -> None:
    calls = {
        str(path.relative_to(SRC)): found
        for path in modules(".")
        if (found := execute_calls(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert calls == {"orchestrator.py": calls.get("orchestrator.py", [])}, calls
    assert len(calls["orchestrator.py"]) == 1
    sample = "svc.feed.execute(result)\nself._feed.execute(r)\ncon.execute(sql)"
    assert execute_calls(ast.parse(sample)) == [1, 2]


def test_lower_layers_do_not_import_the_service_or_the_api() -> None:
    higher = ("tickgate.service", "tickgate.api", "tickgate.web", "tickgate.demo")
    offenders = import_offenders(LOWER, lambda module: module.startswith(higher))
    assert offenders == [], "\n".join(offenders)


STORE_PARTS = (
    "store/gate.py",
    "store/prepared.py",
    "store/users.py",
    "store/watchlists.py",
    "store/subscriptions.py",
    "store/audit.py",
    "store/atm.py",
    "store/meta.py",
    "store/commands.py",
    "store/lease.py",
    "store/batch.py",
    "store/writer.py",
)


def test_store_parts_do_not_reach_back_into_the_store() -> None:
    """The repositories, the gate and the writer are parts the ``Store`` composes: none imports it (the
    writer reaches the database only through its ``BatchSink``)."""
    offenders = import_offenders(STORE_PARTS, lambda module: module == "tickgate.store.core")
    assert offenders == [], "\n".join(offenders)


def test_the_feed_client_side_does_not_import_the_simulator_or_the_registry() -> None:
    """``dhan`` is the client's protocol and sockets: it imports neither the simulator (``tickgate.sim``,
    which sits on top of it) nor the instrument registry (which imports ``dhan.protocol``): no cycle."""
    offenders = import_offenders(
        ("dhan",), lambda module: module.startswith(("tickgate.sim", "tickgate.instruments"))
    )
    assert offenders == [], "\n".join(offenders)
