"""The one-clock rule, enforced: nothing in ``src/`` reads market time except ``tickgate/clock.py``.

Walks every module's AST and fails on a call (or a reference, e.g. a default argument) to ``date.today``,
``datetime.now``/``utcnow``/``today``, ``time.time``/``time_ns``, ``time.localtime``/``gmtime``/``ctime``, in
whatever way the module imported them. Elapsed-time readings (``time.monotonic``, ``time.perf_counter``) are
allowed: a ping interval or a benchmark span is host time, not market time. A line that must read the host's
wall clock for a non-market reason says so with a ``real-time:`` comment and is listed in the report.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tickgate"
CLOCK_MODULE = SRC / "clock.py"
EXEMPT_MARK = "real-time:"

# (module, attribute) pairs that read the wall clock; module is the *canonical* one (datetime/time).
FORBIDDEN: frozenset[tuple[str, str]] = frozenset(
    {
        ("datetime.date", "today"),
        ("datetime.datetime", "now"),
        ("datetime.datetime", "utcnow"),
        ("datetime.datetime", "today"),
        ("time", "time"),
        ("time", "time_ns"),
        ("time", "localtime"),
        ("time", "gmtime"),
        ("time", "ctime"),
    }
)


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> canonical dotted name, from the module's imports (``import datetime as dt``, ``from
    datetime import date``, ``from time import time``...)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module in ("datetime", "time"):
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return None if base is None else f"{base}.{node.attr}"
    return None


def violations(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, what) for every wall-clock read in ``source`` not marked ``real-time:``."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute | ast.Name):
            continue
        dotted = _dotted(node, aliases)
        if dotted is None or "." not in dotted:
            continue
        module, _, attr = dotted.rpartition(".")
        if (module, attr) in FORBIDDEN and EXEMPT_MARK not in lines[node.lineno - 1]:
            found.append((node.lineno, dotted))
    return sorted(set(found))


def test_guard_finds_every_spelling() -> None:
    """The guard itself can fail: each way of reading the wall clock is caught, elapsed time is not."""
    cases = {
        "import datetime as dt\nx = dt.date.today()": "datetime.date.today",
        "import datetime\nx = datetime.datetime.now()": "datetime.datetime.now",
        "from datetime import datetime, UTC\nx = datetime.now(UTC)": "datetime.datetime.now",
        "from datetime import date\nx = date.today()": "datetime.date.today",
        "import time\nx = time.time()": "time.time",
        "from time import time\nx = time()": "time.time",
        "import time\ndef f(clock=time.time): ...": "time.time",
        "from datetime import datetime as D\nx = D.utcnow()": "datetime.datetime.utcnow",
    }
    for source, expected in cases.items():
        assert [what for _, what in violations(source)] == [expected], source
    allowed = (
        "import time\nimport datetime as dt\n"
        "a = time.monotonic()\nb = time.perf_counter()\nc = dt.date(2026, 1, 1)"
    )
    assert violations(allowed) == []
    assert violations("import time\nx = time.time()  # real-time: a latency stamp") == []


def test_nothing_in_src_reads_market_time_but_the_clock() -> None:
    offenders: list[str] = []
    exempt: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        if path == CLOCK_MODULE:
            continue
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(SRC.parent)
        offenders += [f"{rel}:{line}: {what}" for line, what in violations(text, str(path))]
        exempt += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if EXEMPT_MARK in line]
    assert offenders == [], "read the time from tickgate.clock (injected), not:\n" + "\n".join(offenders)
    # The exemptions are few and named: a new one is a decision, so it shows up here.
    assert len(exempt) <= 2, exempt


@pytest.mark.parametrize("path", [CLOCK_MODULE])
def test_the_clock_module_is_where_the_host_time_is_read(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")), "the clock module should be the one reader"
