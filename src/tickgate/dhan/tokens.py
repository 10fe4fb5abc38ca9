"""Dhan access tokens over a week without a person: renewed ahead of expiry, generated headless when renewal
is not possible, kept on disk for the next start, and set by an operator at runtime.

Dhan's tokens live 24 h. :class:`TokenManager` holds the current one and hands it to every connect and
REST request (it is the feed's and the backfill's :data:`~tickgate.dhan.client.CredentialsProvider`):

* ``renew_margin_s`` before the expiry it asks ``GET {rest}/v2/RenewToken`` for a fresh token;
* when that fails (the token already expired, or Dhan refuses) and a PIN and TOTP secret are configured, it
  generates one: ``POST {auth}/app/generateAccessToken?dhanClientId&pin&totp``, the TOTP computed with
  ``pyotp`` from the secret;
* every new token is written to ``dhan-token.json`` in the data directory (mode 0600, written whole then
  renamed), so that a restart uses the newest token and not the stale one still in the environment; an
  operator who puts a *different* token in the environment wins over the file;
* listeners (the feed pool) are told, so that sockets parked on a fatal 807 come back at once.

An expiry comes from the answer's ``expiryTime`` (IST), else from the token itself when it is a JWT
(Dhan's are: the ``exp`` claim), else it is unknown, and the token is renewed at once to learn it.

The token, the PIN and the TOTP secret never leave this module in text: errors, logs and :meth:`status`
carry at most a fingerprint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp

from tickgate.clock import IST, Clock
from tickgate.dhan.client import Credentials, RedactTokens

log = logging.getLogger(__name__)
# httpx logs each request's URL at INFO, and headless generation carries the PIN and TOTP in its query.
logging.getLogger("httpx").addFilter(RedactTokens())

RENEW_PATH = "/v2/RenewToken"
GENERATE_PATH = "/app/generateAccessToken"
TOKEN_FILE = "dhan-token.json"


class TokenError(Exception):
    """A renewal or generation that failed; the text never holds a secret."""


# -- pure ---------------------------------------------------------------------------------------------------


def jwt_expiry(token: str) -> dt.datetime | None:
    """The ``exp`` claim of a JWT, unverified (only to know when to renew); None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        return dt.datetime.fromtimestamp(float(exp), dt.UTC) if isinstance(exp, int | float) else None
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        return None


def parse_token_answer(body: Any) -> tuple[str, dt.datetime | None]:
    """(token, expiry) from a RenewToken or generateAccessToken answer (``accessToken``, ``expiryTime`` in
    IST; some clients have seen ``token`` and a nested ``data``: all are read)."""
    data = body.get("data") if isinstance(body, dict) and isinstance(body.get("data"), dict) else body
    if not isinstance(data, dict):
        raise TokenError("token answer is not a JSON object")
    token = data.get("accessToken") or data.get("access_token") or data.get("token")
    if not isinstance(token, str) or not token:
        raise TokenError("token answer without an access token")
    expiry: dt.datetime | None = None
    raw = data.get("expiryTime") or data.get("expiresAt")
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            expiry = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=IST)
    return token, expiry or jwt_expiry(token)


def renew_at(expires_at: dt.datetime | None, margin_s: float) -> dt.datetime | None:
    """When to renew: ``margin_s`` before the expiry; None (at once) when the expiry is unknown."""
    return None if expires_at is None else expires_at - dt.timedelta(seconds=margin_s)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the token file holds. ``replaces``: the fingerprint of the environment's token when this one was
    obtained, so that a later, different environment token (an operator's) is known to be newer."""

    client_id: str
    token: str
    expires_at: dt.datetime | None
    obtained_at: dt.datetime
    source: str  # environment, file, renewed, generated, admin
    replaces: str

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.client_id, self.token)


class TokenFile:
    """``dhan-token.json`` in the data directory, readable by its owner only (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> TokenRecord | None:
        try:
            raw = json.loads(self.path.read_text())
            expires = raw.get("expires_at")
            return TokenRecord(
                str(raw["client_id"]),
                str(raw["token"]),
                dt.datetime.fromisoformat(expires) if expires else None,
                dt.datetime.fromisoformat(raw["obtained_at"]),
                "file",
                str(raw.get("replaces", "")),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("token file %s unreadable; ignored", self.path)
            return None

    def save(self, record: TokenRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "client_id": record.client_id,
            "token": record.token,
            "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            "obtained_at": record.obtained_at.isoformat(),
            "source": record.source,
            "replaces": record.replaces,
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT: set it
            json.dump(body, f)
        os.replace(tmp, self.path)


# -- the shell ----------------------------------------------------------------------------------------------


class TokenStats:
    def __init__(self) -> None:
        self.renewals = self.generations = self.failures = self.set_by_admin = 0
        self.last_error: str | None = None


class TokenManager:
    """See the module docstring."""

    def __init__(
        self,
        client_id: str,
        token: str,
        *,
        clock: Clock,
        data_dir: Path,
        rest_url: str,
        auth_url: str,
        renew_margin_s: float = 3_600.0,
        retry_s: float = 60.0,
        token_file: str = TOKEN_FILE,
        pin: str | None = None,
        totp_secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._clock = clock
        self._file = TokenFile(data_dir / token_file)
        self._rest_url = rest_url.rstrip("/")
        self._auth_url = auth_url.rstrip("/")
        self.renew_margin_s = renew_margin_s
        self._retry_s = retry_s
        self._pin = pin
        self._totp_secret = totp_secret
        self._transport = transport
        self.stats = TokenStats()
        self._listeners: list[Callable[[Credentials], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._urgent = False  # the feed says the token is dead: refresh now, not at its renewal time
        env = Credentials(client_id, token)
        saved = self._file.load()
        if saved is not None and saved.client_id == client_id and saved.replaces == env.fingerprint:
            self._record = saved  # obtained since this environment's token: newer
        else:
            self._record = TokenRecord(
                client_id, token, jwt_expiry(token), clock.utcnow(), "environment", env.fingerprint
            )

    # -- what others read ---------------------------------------------------------------------------------

    def credentials(self) -> Credentials:
        return self._record.credentials

    def on_change(self, listener: Callable[[Credentials], None]) -> None:
        self._listeners.append(listener)

    def renew_now(self) -> None:
        """The feed was refused the token (807 expired, 808 invalid): refresh at once. Renewal needs a
        valid token, so this usually ends in generation from the PIN and TOTP when they are set."""
        self._urgent = True
        self._wake.set()

    @property
    def can_generate(self) -> bool:
        return bool(self._pin and self._totp_secret)

    def status(self) -> dict[str, Any]:
        """For ``/health``, ``/ws/status`` and ``/admin/stats``: no secret, a fingerprint at most."""
        r = self._record
        due = renew_at(r.expires_at, self.renew_margin_s)
        return {
            "fingerprint": r.credentials.fingerprint,
            "source": r.source,
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "obtained_at": r.obtained_at.isoformat(),
            "renew_at": due.isoformat() if due else None,
            "headless_generation": self.can_generate,
            "renewals": self.stats.renewals,
            "generations": self.stats.generations,
            "failures": self.stats.failures,
            "set_by_admin": self.stats.set_by_admin,
            "last_error": self.stats.last_error,
        }

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tickgate-token")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def set_token(self, token: str, client_id: str | None = None) -> Credentials:
        """An operator's token (``POST /admin/token``): used from now on, saved, listeners told."""
        token = token.strip()
        if not token:
            raise ValueError("token must not be empty")
        self.stats.set_by_admin += 1
        self._adopt(token, jwt_expiry(token), "admin", client_id)
        return self.credentials()

    async def refresh(self) -> Credentials:
        """Renew now, else generate (what the loop does when due); raises :class:`TokenError`."""
        try:
            token, expiry = await self._renew()
            self.stats.renewals += 1
            self._adopt(token, expiry, "renewed")
        except TokenError as renew_failed:
            if not self.can_generate:
                raise
            log.warning("token renewal failed (%s); generating one from the PIN and TOTP", renew_failed)
            token, expiry = await self._generate()
            self.stats.generations += 1
            self._adopt(token, expiry, "generated")
        return self.credentials()

    # -- internals ----------------------------------------------------------------------------------------

    def _adopt(
        self, token: str, expiry: dt.datetime | None, source: str, client_id: str | None = None
    ) -> None:
        old = self._record
        self._record = TokenRecord(
            client_id or old.client_id, token, expiry, self._clock.utcnow(), source, old.replaces
        )
        try:
            self._file.save(self._record)
        except OSError as exc:
            log.error("could not save the token file %s: %s", self._file.path, type(exc).__name__)
        self.stats.last_error = None
        log.info(
            "Dhan token %s (%s), expires %s",
            source,
            self._record.credentials.fingerprint,
            expiry.isoformat() if expiry else "unknown",
        )
        self._wake.set()
        for listener in self._listeners:
            listener(self._record.credentials)

    async def _run(self) -> None:
        """Forever: sleep (on the clock) until the renewal is due, renew or generate, retry on failure."""
        retry = self._retry_s
        while True:
            due = renew_at(self._record.expires_at, self.renew_margin_s)
            if not self._urgent and due is not None and due > self._clock.utcnow():
                self._wake.clear()
                sleeper = asyncio.ensure_future(self._clock.sleep_until(due))
                woken = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    woken.cancel()
                continue  # a token set meanwhile: due again
            try:
                await self.refresh()
                self._urgent = False
                retry = self._retry_s
            except Exception as exc:  # logged, counted, retried: the loop never dies
                self.stats.failures += 1
                self.stats.last_error = self._safe(f"{type(exc).__name__}: {exc}")
                log.error("Dhan token refresh failed (%s); again in %.0f s", self.stats.last_error, retry)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(retry):
                        await self._wake.wait()
                retry = min(retry * 2, 900.0)

    def _safe(self, text: str) -> str:
        for secret in (self._record.token, self._pin, self._totp_secret):
            if secret:
                text = text.replace(secret, "***")
        return text[:300]

    async def _post_or_get(self, method: str, url: str, **kw: Any) -> Any:
        async with httpx.AsyncClient(timeout=15, transport=self._transport) as http:
            try:
                response = await http.request(method, url, **kw)
            except httpx.HTTPError as exc:
                raise TokenError(f"{type(exc).__name__} from {url.split('?', maxsplit=1)[0]}") from None
        if response.status_code != 200:
            raise TokenError(f"{url.split('?', maxsplit=1)[0]} answered {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise TokenError(f"{url.split('?', maxsplit=1)[0]} answered no JSON") from None

    async def _renew(self) -> tuple[str, dt.datetime | None]:
        r = self._record
        body = await self._post_or_get(
            "GET",
            f"{self._rest_url}{RENEW_PATH}",
            headers={"access-token": r.token, "dhanClientId": r.client_id},
        )
        return parse_token_answer(body)

    async def _generate(self) -> tuple[str, dt.datetime | None]:
        if not (self._pin and self._totp_secret):
            raise TokenError("no PIN and TOTP secret to generate a token with")
        params = {
            "dhanClientId": self._record.client_id,
            "pin": self._pin,
            "totp": pyotp.TOTP(self._totp_secret).now(),
        }
        body = await self._post_or_get("POST", f"{self._auth_url}{GENERATE_PATH}", params=params)
        return parse_token_answer(body)
