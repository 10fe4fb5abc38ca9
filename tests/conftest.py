"""Shared test configuration.

Hypothesis profiles: ``ci`` (used by ``make test``; CI=true selects it too) runs the example counts the
issues ask for; ``dev`` is a quicker loop; ``fuzz`` is the long documented run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

import pinned  # first: pins the clock in the environment before any Settings() exists

if TYPE_CHECKING:
    from tickgate.instruments import InstrumentRegistry


def _tolerate_cpython_ast_bug() -> None:
    """CPython 3.11 keeps ``ast``'s recursion-depth counter in one place for the whole interpreter
    (gh-106905): an ``ast.parse`` in one thread that interleaves with one in another (a finaliser running
    mid-conversion lets the other thread in) fails with "SystemError: AST constructor recursion depth
    mismatch" although both sources are fine. The API tests parse in two threads at once: the test's
    (pytest rewriting a plugin's asserts on a lazy import, Hypothesis describing a lambda or pretty-printing
    an example) and the live uvicorn server's (pydantic asks ``inspect.signature`` of a builtin default
    factory, which parses its text signature). A parse that met the race is simply done again (it fails
    only when it interleaved). Parses are also taken one thread at a time: a retry alone failed five times
    in a row in CI, while Hypothesis parsed a 200 KB module source and the server's thread, on 1 ms GIL
    slices, parsed in between every time."""
    import ast
    import threading

    parse = ast.parse
    one_at_a_time = threading.RLock()

    def parse_again_on_the_race(*args: Any, **kwargs: Any) -> Any:
        with one_at_a_time:
            for _ in range(4):
                try:
                    return parse(*args, **kwargs)
                except SystemError as exc:
                    if "recursion depth mismatch" not in str(exc):
                        raise
            return parse(*args, **kwargs)

    ast.parse = parse_again_on_the_race


if sys.version_info < (3, 12):
    _tolerate_cpython_ast_bug()

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "fuzz", max_examples=200_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(
    os.environ.get("TICKGATE_SAMPLES_DIR", REPO_ROOT.parent / "shared" / "data" / "dhan-samples")
)


def _dump_tasks(signum: int, frame: object) -> None:
    """``kill -USR1 <pytest>``: every asyncio task's stack, in ``$TMPDIR/pytest-tasks-<pid>.txt`` (pytest
    captures stderr), so that a hung test shows what it awaits."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"pytest-tasks-{os.getpid()}.txt"
    with out.open("w") as f:
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:
            f.write("no running event loop\n")
            return
        for task in tasks:
            f.write(f"--- {task.get_name()}\n")
            task.print_stack(file=f)


signal.signal(signal.SIGUSR1, _dump_tasks)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Real Dhan scrip-master extracts (read-only, beside the repository)."""
    if not SAMPLES_DIR.is_dir():
        pytest.fail(f"real Dhan samples not found at {SAMPLES_DIR} (set TICKGATE_SAMPLES_DIR)")
    return SAMPLES_DIR


GENERATED_TODAY = pinned.TODAY  # the day the shared generated master is laid out from


@pytest.fixture(scope="session")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full-size generated master (detailed format) for every suite that runs a whole service."""
    from tickgate.instruments import generate_master

    path = tmp_path_factory.mktemp("master") / "master.csv"
    generate_master(path, fmt="detailed", seed=0, today=GENERATED_TODAY)
    return path


@pytest.fixture(scope="session")
def registry(master: Path) -> InstrumentRegistry:
    from tickgate.instruments import InstrumentRegistry

    return InstrumentRegistry.load(master, today=GENERATED_TODAY)
