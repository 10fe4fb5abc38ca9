"""``python -m tickgate`` = the ``tickgate`` command."""

from tickgate.cli import app

app(prog_name="tickgate")
