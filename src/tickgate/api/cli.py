"""``tickgate serve``, ``tickgate users add``, ``tickgate eod --now``, ``tickgate accounts check``
(registered in :mod:`tickgate.cli`).

Heavy imports stay inside the functions so ``tickgate --help`` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tickgate.accounts import Account
    from tickgate.config import Settings

users_app = typer.Typer(help="API users and their keys.", no_args_is_help=True, rich_markup_mode=None)
accounts_app = typer.Typer(
    help="The Dhan accounts tickgate pools (TICKGATE_ACCOUNTS_FILE, or DHAN_CLIENT_ID alone).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NO_CREDENTIALS = (
    "DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN are not set (nor an accounts file's tokens): refusing to connect to"
    " Dhan's feed without them.\n"
    "To try tickgate without an account, run `make demo` (or `tickgate demo`): it starts the built-in"
    " simulator."
)


def serve(
    *,
    host: Annotated[str | None, typer.Option(help="Interface (default TICKGATE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default TICKGATE_PORT, 8000).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the API and the live feed in one process (uvicorn). Needs DHAN_CLIENT_ID/DHAN_ACCESS_TOKEN, or
    an accounts file (TICKGATE_ACCOUNTS_FILE); every other setting comes from TICKGATE_* variables (see
    `tickgate.config.Settings`)."""
    import logging

    import uvicorn

    from tickgate.api.app import create_app, uvicorn_config
    from tickgate.api.logs import configure_logging
    from tickgate.config import VirtualClockError, get_settings

    settings = get_settings()
    accounts = _accounts_or_exit(settings, "serve")
    if any(a.access_token is None for a in accounts):
        typer.echo(NO_CREDENTIALS, err=True)
        raise typer.Exit(2)
    try:
        settings.check_clock_for(settings.feed_url)
    except VirtualClockError as exc:
        typer.echo(f"tickgate serve: {exc}", err=True)
        raise typer.Exit(2) from None
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=updates)
    configure_logging(getattr(logging, log_level.upper(), logging.INFO))
    app = create_app(settings=settings)
    uvicorn.Server(uvicorn_config(app, settings)).run()


def gateway(
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Hold the Dhan sockets while holding the lease (PostgreSQL), publish quotes and answer the API
    replicas' commands on the broker (TICKGATE_BUS_URL); a second gateway waits as the standby."""
    import asyncio
    import logging

    from tickgate.api.logs import configure_logging
    from tickgate.gateway import run_gateway

    settings = _split_settings_or_exit("gateway")
    configure_logging(getattr(logging, log_level.upper(), logging.INFO))
    asyncio.run(run_gateway(settings))


def _split_settings_or_exit(role: str) -> Settings:
    """The settings, when they can run the split mode's ``role``; else exit 2 saying what is missing."""
    from tickgate.config import get_settings
    from tickgate.gateway import SplitModeError, check_split_mode

    settings = get_settings()
    try:
        check_split_mode(settings, role)
    except SplitModeError as exc:
        typer.echo(f"tickgate {role}: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


def api(
    *,
    host: Annotated[str | None, typer.Option(help="Interface (default TICKGATE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default TICKGATE_PORT, 8000).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve the REST API, the push channel and the dashboard as a stateless replica: quotes and the plan
    from the active gateway over the broker (TICKGATE_BUS_URL), users' data from PostgreSQL, writes sent
    to the gateway. Run as many as the screens need."""
    import asyncio
    import logging

    from tickgate.api.logs import configure_logging
    from tickgate.replica import run_api

    settings = _split_settings_or_exit("api")
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    configure_logging(getattr(logging, log_level.upper(), logging.INFO))
    asyncio.run(run_api(settings.model_copy(update=updates)))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (unique).")],
    *,
    admin: Annotated[bool, typer.Option("--admin", help="May call the admin endpoints.")] = False,
) -> None:
    """Create a user and print its API key — once: only its hash is stored."""
    from tickgate.config import get_settings
    from tickgate.store import Store
    from tickgate.store.types import DuplicateError

    async def run() -> str:
        store = await Store.from_settings(get_settings())
        try:
            _user, key = await store.users.create(name, admin=admin)
        finally:
            await store.close()
        return key

    import asyncio

    try:
        key = asyncio.run(run())
    except DuplicateError:
        typer.echo(f"a user named {name!r} already exists", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {'admin ' if admin else ''}user {name}; API key (shown once, keep it):", err=True)
    typer.echo(key)


def eod(
    *,
    now: Annotated[bool, typer.Option("--now", help="Clear now, whatever the clock says.")] = False,
    session: Annotated[str | None, typer.Option(help="NSE_BSE or MCX (default: all).")] = None,
    url: Annotated[
        str | None, typer.Option(help="A running server to ask (default http://TICKGATE_HOST:TICKGATE_PORT).")
    ] = None,
) -> None:
    """End-of-day cleanup of Tier A watchlists (Tier B stays). A running server is asked to do it
    (POST /admin/cleanup with TICKGATE_ADMIN_KEY) so its live plan follows; with no server reachable, the
    database is cleared directly and the next start restores nothing of it."""
    import httpx

    from tickgate.config import get_settings
    from tickgate.schedule.eod import SESSIONS

    if not now:
        typer.echo("end of day runs on its own schedule inside `tickgate serve`; pass --now to run it now.")
        raise typer.Exit(2)
    if session is not None and session not in SESSIONS:
        typer.echo(f"unknown session {session!r}: one of {', '.join(SESSIONS)}", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    base = url or f"http://{settings.host}:{settings.port}"
    if settings.admin_key is not None:
        try:
            r = httpx.post(
                f"{base}/api/v2/admin/cleanup",
                params={"session": session} if session else None,
                headers={"X-API-Key": settings.admin_key.get_secret_value()},
                timeout=30,
            )
        except httpx.TransportError:
            pass
        else:
            if r.status_code != 200:
                typer.echo(f"server answered {r.status_code}: {r.text}", err=True)
                raise typer.Exit(1)
            typer.echo(r.text)
            return
    typer.echo(f"no server answering at {base}: clearing the database directly", err=True)

    async def offline() -> list[dict[str, object]]:
        from tickgate.service import TickgateService
        from tickgate.store import Store

        store = await Store.from_settings(settings)
        try:
            service = TickgateService(settings, store=store, scheduler=False)
            return await service.eod_now(session)
        finally:
            await store.close()

    import asyncio
    import json

    typer.echo(json.dumps(asyncio.run(offline()), default=str))


@accounts_app.command("check")
def accounts_check(
    *,
    handshake: Annotated[
        bool,
        typer.Option(
            help="Open one feed socket per account (it counts against the account's five: run the check"
            " while the gateway is stopped or leaves a socket free)."
        ),
    ] = True,
) -> None:
    """Validate each account: its token (Dhan's profile), its data plan, a feed handshake; print a table.
    Exit 1 when any account fails. No secret is printed."""
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from tickgate.config import get_settings
    from tickgate.dhan.check import AccountCheck, check_account
    from tickgate.dhan.client import Credentials

    settings = get_settings()
    accounts = _accounts_or_exit(settings, "accounts check")

    async def run() -> list[AccountCheck]:
        checks = []
        for account in accounts:
            token = account.access_token
            credentials = None if token is None else Credentials(account.client_id, token.get_secret_value())
            checks.append(
                await check_account(
                    account.name,
                    credentials,
                    rest_url=settings.rest_url,
                    feed=settings.feed_url,
                    handshake=handshake,
                )
            )
        return checks

    results = asyncio.run(run())
    table = Table(title=f"{len(results)} Dhan account(s)")
    for column in ("account", "client id", "token", "valid until", "data plan", "handshake", "ok"):
        table.add_column(column)
    failed = 0
    for r in results:
        failed += not r.ok
        table.add_row(
            r.name,
            r.client_id,
            r.token,
            r.token_valid_until or "",
            r.data_plan,
            r.handshake,
            "yes" if r.ok else "NO",
        )
    Console(width=160).print(table)
    capacity = settings.limits.instruments_per_socket * sum(
        a.limits(settings.limits).feed_sockets for a in accounts
    )
    typer.echo(f"capacity if all pass: {capacity:,} instruments on {len(accounts)} account(s)")
    if failed:
        raise typer.Exit(1)


def _accounts_or_exit(settings: Settings, command: str) -> list[Account]:
    """The configured accounts, or exit 2 with the reason (a bad accounts file, or none at all)."""
    from tickgate.accounts import AccountsError, load_accounts

    try:
        accounts = load_accounts(settings)
    except AccountsError as exc:
        typer.echo(f"tickgate {command}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not accounts:
        typer.echo(NO_CREDENTIALS, err=True)
        raise typer.Exit(2)
    return accounts
