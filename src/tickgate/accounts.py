"""The Dhan accounts whose feeds one tickgate pools (issue 19): who they are, and where their secrets are.

Why a file beside the settings: a desk with more than 25,000 instruments runs several accounts (each with
its own data plan), and each needs a client id, a token and, for an unattended week, a PIN and a TOTP
secret. The accounts file (TOML, ``TICKGATE_ACCOUNTS_FILE``) names the accounts and their socket shares; it
holds **no secret**, and loading refuses one that does, so the file can sit in version control:

    [[accounts]]
    name = "main"              # letters, digits, _ and -; names the secrets and the token file
    client_id = "1000000001"
    reserved_sockets = 1       # optional: sockets left to the desk's other programs on this client id

Each account's secrets come from the environment, ``DHAN_ACCESS_TOKEN_<NAME>``, ``DHAN_PIN_<NAME>`` and
``DHAN_TOTP_SECRET_<NAME>`` (NAME upper-cased, ``-`` as ``_``), or from a secrets file
(``TICKGATE_SECRETS_FILE``, TOML, one table per account: ``[main] access_token = "…"``) that must be
readable by its owner only (0600). Without an accounts file, ``DHAN_CLIENT_ID`` / ``DHAN_ACCESS_TOKEN``
(and ``DHAN_PIN`` / ``DHAN_TOTP_SECRET``) are the one account, as before.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tickgate.config import FeedLimits, Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_SECRET_FIELDS = ("access_token", "pin", "totp_secret")
_ALLOWED = {"name", "client_id", "reserved_sockets"}
_SECRETISH = re.compile(r"token|pin|totp|secret|password", re.IGNORECASE)
DEFAULT_NAME = "default"


class AccountsError(ValueError):
    """The accounts file (or its secrets) is unusable; the message says which account and why (never a
    secret's value)."""


@dataclass(frozen=True)
class Account:
    """One Dhan account: its client id, its secrets (``SecretStr``: never printed), its share of sockets."""

    name: str
    client_id: str
    access_token: SecretStr | None = None
    pin: SecretStr | None = None
    totp_secret: SecretStr | None = None
    reserved_sockets: int | None = None  # None: the settings' limits.reserved_sockets

    def limits(self, base: FeedLimits) -> FeedLimits:
        """Dhan's limits for this account: the same per socket and per message; its own reserved sockets."""
        if self.reserved_sockets is None or self.reserved_sockets == base.reserved_sockets:
            return base
        try:
            return FeedLimits.model_validate({**base.model_dump(), "reserved_sockets": self.reserved_sockets})
        except ValueError as exc:
            raise AccountsError(f"account {self.name!r}: {exc}") from None

    @property
    def token_file(self) -> str:
        """The account's token file in the data directory (0600); the one-account case keeps the old name."""
        return "dhan-token.json" if self.name == DEFAULT_NAME else f"dhan-token-{self.name}.json"

    def __repr__(self) -> str:  # the dataclass repr would show SecretStr('**********'): say less
        return f"Account({self.name!r}, client_id={self.client_id!r})"


def env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def load_accounts(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Account]:
    """The accounts to pool: the accounts file's, else the one account of ``DHAN_CLIENT_ID``, else none
    (offline: the embedded simulator's)."""
    env = os.environ if environ is None else environ
    if settings.accounts_file is None:
        if settings.dhan_client_id is None:
            return []
        return [
            Account(
                DEFAULT_NAME,
                settings.dhan_client_id.get_secret_value(),
                settings.dhan_access_token,
                settings.dhan_pin,
                settings.dhan_totp_secret,
            )
        ]
    path = Path(settings.accounts_file)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise AccountsError(f"accounts file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AccountsError(f"accounts file {path}: not TOML ({exc})") from None
    entries = raw.get("accounts")
    if not isinstance(entries, list) or not entries:
        raise AccountsError(f"accounts file {path}: no [[accounts]] entries")
    secrets = _secrets_file(settings.secrets_file)
    accounts: list[Account] = []
    for i, entry in enumerate(entries):
        accounts.append(_account(entry, i, path, env=env, secrets=secrets, limits=settings.limits))
    names = [a.name for a in accounts]
    clients = [a.client_id for a in accounts]
    for what, values in (("name", names), ("client_id", clients)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise AccountsError(f"accounts file {path}: {what} used twice: {', '.join(dupes)}")
    return accounts


def _account(
    entry: Any,
    i: int,
    path: Path,
    *,
    env: Mapping[str, str],
    secrets: dict[str, dict[str, str]],
    limits: FeedLimits,
) -> Account:
    where = f"accounts file {path}, account #{i + 1}"
    if not isinstance(entry, dict):
        raise AccountsError(f"{where}: not a table")
    leaked = sorted(k for k in entry if _SECRETISH.search(k))
    if leaked:
        raise AccountsError(
            f"{where}: {', '.join(leaked)} must not be in the accounts file: give secrets in the environment"
            " (DHAN_ACCESS_TOKEN_<NAME>, ...) or the secrets file (TICKGATE_SECRETS_FILE, mode 0600)"
        )
    unknown = sorted(set(entry) - _ALLOWED)
    if unknown:
        raise AccountsError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {sorted(_ALLOWED)})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise AccountsError(f"{where}: name must be 1-32 letters, digits, _ or -")
    client_id = entry.get("client_id")
    if isinstance(client_id, int):
        client_id = str(client_id)
    if not isinstance(client_id, str) or not client_id:
        raise AccountsError(f"{where} ({name}): client_id is required")
    reserved = entry.get("reserved_sockets")
    if reserved is not None and (not isinstance(reserved, int) or isinstance(reserved, bool)):
        raise AccountsError(f"{where} ({name}): reserved_sockets must be a whole number")
    own = secrets.get(name, {})
    values: dict[str, SecretStr | None] = {}
    for field in _SECRET_FIELDS:
        value = env.get(f"DHAN_{field.upper()}_{env_name(name)}") or own.get(field)
        values[field] = SecretStr(value) if value else None
    account = Account(name, client_id, reserved_sockets=reserved, **values)
    account.limits(limits)  # an impossible reserve is refused now, naming the account
    return account


def _secrets_file(path: Path | None) -> dict[str, dict[str, str]]:
    """The secrets file's tables by account name; refused unless only its owner can read it."""
    if path is None:
        return {}
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise AccountsError(f"secrets file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AccountsError(f"secrets file {path}: mode {stat.S_IMODE(mode):o}, must be 0600 (chmod 600 it)")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise AccountsError(f"secrets file {path}: not TOML") from None  # the parser's message may quote it
    out: dict[str, dict[str, str]] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise AccountsError(f"secrets file {path}: [{name}] must be a table")
        unknown = sorted(set(table) - set(_SECRET_FIELDS))
        if unknown:
            raise AccountsError(f"secrets file {path}: [{name}] unknown field(s) {', '.join(unknown)}")
        out[name] = {k: str(v) for k, v in table.items()}
    return out
