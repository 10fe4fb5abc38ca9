"""``tickgate tierb …``: show what the Tier B universe resolves to on a given master and day."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from tickgate.chains.tierb import TierBPlan

# The registry (polars, numpy), the Tier B resolver and the tables (rich) are imported inside the command:
# every ``tickgate`` command imports this module to register the sub-app, ``tickgate --help`` included.

tierb_app = typer.Typer(
    help="Tier B (always-on) universe: resolve and inspect.", no_args_is_help=True, rich_markup_mode=None
)


def _date(value: str | None) -> dt.date:
    if value is None:
        from tickgate.instruments.model import ist_today

        return ist_today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint="--today") from None


@tierb_app.command()
def plan(
    *,
    master: Annotated[
        Path | None,
        typer.Option(help="Scrip master (compact or detailed). Default: a generated one (seed 0, --today)."),
    ] = None,
    today: Annotated[
        str | None, typer.Option(help="Resolve as of this day (YYYY-MM-DD; default: the clock's IST today).")
    ] = None,
    universe: Annotated[
        Path | None,
        typer.Option(help="Universe file (default: settings chains.tier_b, else the shipped one)."),
    ] = None,
) -> None:
    """Print the resolved Tier B universe: groups, sizes, shortfalls, totals."""
    from rich.console import Console

    from tickgate.chains.tierb import TierBConfigError, TierBUniverse
    from tickgate.instruments.model import MasterFormatError
    from tickgate.instruments.registry import InstrumentRegistry

    day = _date(today)
    console = Console(width=max(Console().width, 120))
    try:
        uni = TierBUniverse.load(universe)
    except TierBConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with tempfile.TemporaryDirectory(prefix="tickgate-tierb-") as tmp:
        path = master
        if path is None:
            from tickgate.instruments.generator import generate_master

            path = Path(tmp) / "master.csv"
            generate_master(path, seed=0, today=day)
            origin = f"generated master (seed 0, {day})"
        else:
            origin = str(path)
        try:
            registry = InstrumentRegistry.load(path, today=day)
        except (MasterFormatError, OSError) as exc:
            typer.echo(f"error: cannot load master {path}: {exc}", err=True)
            raise typer.Exit(2) from None
        resolved = uni.resolve(registry, day)
    _print(console, resolved, origin)


def _print(console: Console, p: TierBPlan, origin: str) -> None:
    from rich.table import Table

    groups = Table(title=f"Tier B on {p.today} — {p.source} against {origin}", title_justify="left")
    groups.add_column("group")
    groups.add_column("kind")
    groups.add_column("strikes", justify="right")
    groups.add_column("ATM", justify="right")
    groups.add_column("mode")
    groups.add_column("keys", justify="right")
    for g in p.groups:
        w = g.window
        if w is not None:
            strikes = f"{w.returned}/{w.requested}" + (" (truncated)" if w.truncated else "")
            atm = f"{w.atm_strike:g} ({w.ltp_source})"
            kind: str = w.expiry.kind
        else:
            strikes, atm, kind = "—", "—", "futures"
        groups.add_row(g.group, kind, strikes, atm, g.mode.name.lower(), f"{g.size:,}")
    groups.add_section()
    groups.add_row(f"{len(p.groups)} groups", "", "", "", "", f"{p.summed:,}")
    console.print(groups)

    entries = Table(title="Per entry: asked vs found", title_justify="left")
    entries.add_column("entry")
    entries.add_column("rule")
    entries.add_column("asked", justify="right")
    entries.add_column("found", justify="right")
    entries.add_column("keys", justify="right")
    entries.add_column("notes")
    for r in p.reports:
        notes = "\n".join((*r.shortfalls, *r.notes)) or "ok"
        entries.add_row(r.entry, r.rule, str(r.asked), str(r.found), f"{r.size:,}", notes)
    entries.add_section()
    asked, found = sum(r.asked for r in p.reports), sum(r.found for r in p.reports)
    entries.add_row("total", "", str(asked), str(found), f"{p.total:,}", "")
    console.print(entries)
    console.print(
        f"Tier B total: {p.total:,} distinct instruments in {len(p.groups)} groups "
        f"({p.summed:,} group keys: an underlying shared by several chains counts once).",
        soft_wrap=True,
    )
    if shortfalls := p.shortfalls():
        console.print(f"{len(shortfalls)} shortfall(s): fewer expiries/contracts listed than asked:")
        for line in shortfalls:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
