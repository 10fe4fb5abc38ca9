"""The simulator's account side of Dhan's authentication: renewing a token and generating one headless.

Sans-I/O like the market quote (:mod:`tickgate.sim.rest`): one request in, one :class:`Answer` out, over
the simulator's :class:`~tickgate.sim.core.TokenBook`.

* ``GET /v2/RenewToken`` (headers ``access-token``, ``dhanClientId``; ``POST`` too, as one client library
  has it): a fresh token for a still-valid one. The old one stays valid until its own expiry (Dhan's
  documentation says nothing of ending it early), so a client that keeps using it meets the 807 then.
* ``POST /app/generateAccessToken?dhanClientId=…&pin=…&totp=…``: a token from the account's PIN and the
  current TOTP of its authenticator secret, checked with ``pyotp`` against real time (an authenticator app
  knows nothing of a market clock).
* ``GET /v2/profile`` (header ``access-token``): the account behind a token, as Dhan answers it, used to
  validate a token without touching the feed: ``dhanClientId``, ``tokenValidity`` (``DD/MM/YYYY HH:MM``
  IST), ``dataPlan`` (``Active`` / ``Deactive``: a blocked client id shows ``Deactive``), ``dataValidity``.

Tokens live ``lifetime_s`` seconds of the market clock (Dhan: 24 h); the answer carries ``accessToken``,
``dhanClientId`` and ``expiryTime`` (IST, ``YYYY-MM-DDTHH:MM:SS``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import pyotp

from tickgate.clock import IST
from tickgate.sim.core import TokenBook
from tickgate.sim.rest import Answer, dhan_error

RENEW_PATH = "/v2/RenewToken"
GENERATE_PATH = "/app/generateAccessToken"
PROFILE_PATH = "/v2/profile"
PATHS = (RENEW_PATH, GENERATE_PATH, PROFILE_PATH)
DAY_S = 86_400.0


def new_token(client_id: str) -> str:
    return f"sim-{client_id}-{secrets.token_urlsafe(18)}"


class AuthStats:
    def __init__(self) -> None:
        self.renewed = self.generated = self.refused = 0

    def to_json(self) -> dict[str, int]:
        return dict(vars(self))


class AuthApi:
    """Answers one authentication request (see the module docstring)."""

    def __init__(
        self,
        tokens: TokenBook,
        *,
        lifetime_s: float | None = DAY_S,
        mint: Callable[[str], str] = new_token,
        totp_at: Callable[[], float] | None = None,
        plan_active: Callable[[str], bool] = lambda _client_id: True,
    ) -> None:
        """``lifetime_s``: market seconds a token lives (None: forever); ``totp_at``: the real time TOTPs are
        checked at (default now); ``plan_active``: whether a client id's data plan is active (not blocked)."""
        self._tokens = tokens
        self._plan_active = plan_active
        self.lifetime_s = lifetime_s
        self._mint = mint
        self._totp_at = totp_at
        self.stats = AuthStats()

    def expiry(self, now: float) -> float | None:
        return None if self.lifetime_s is None else now + self.lifetime_s

    def handle(self, method: str, target: str, headers: Mapping[str, str], now: float) -> Answer:
        """``now``: the market clock's epoch seconds (what tokens expire on)."""
        parts = urlsplit(target)
        if parts.path == RENEW_PATH:
            answer = self._renew(method, headers, now)
        elif parts.path == GENERATE_PATH:
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            answer = self._generate(method, query, now)
        elif parts.path == PROFILE_PATH:
            answer = self._profile(method, headers, now)
        else:
            answer = dhan_error(404, "Input_Exception", "DH-905", f"no such endpoint {parts.path}")
        if answer.status != 200:
            self.stats.refused += 1
        return answer

    def _renew(self, method: str, headers: Mapping[str, str], now: float) -> Answer:
        if method not in ("GET", "POST"):
            return dhan_error(405, "Input_Exception", "DH-905", f"{RENEW_PATH} takes GET")
        token = headers.get("access-token", "")
        client_id = headers.get("dhanclientid") or headers.get("client-id", "")
        reason = self._tokens.verify(token, client_id)
        if reason == 807:
            return dhan_error(
                401, "Invalid_Authentication", "DH-901", "access token expired: generate a new one"
            )
        if reason is not None:
            return dhan_error(401, "Invalid_Authentication", "DH-901", "client id or access token invalid")
        self.stats.renewed += 1
        return self._issued(client_id, now)

    def _profile(self, method: str, headers: Mapping[str, str], now: float) -> Answer:
        if method != "GET":
            return dhan_error(405, "Input_Exception", "DH-905", f"{PROFILE_PATH} takes GET")
        token = headers.get("access-token", "")
        client_id = self._tokens.valid.get(token)
        if client_id is None:
            expired = token in self._tokens.expired
            why = "access token expired: generate a new one" if expired else "access token invalid"
            return dhan_error(401, "Invalid_Authentication", "DH-901", why)
        expires = self._tokens.expires_at.get(token, now + 3650 * DAY_S)
        valid_until = dt.datetime.fromtimestamp(expires, IST)
        plan_until = dt.datetime.fromtimestamp(now + 30 * DAY_S, IST).replace(tzinfo=None, microsecond=0)
        body = {
            "dhanClientId": client_id,
            "tokenValidity": valid_until.strftime("%d/%m/%Y %H:%M"),
            "activeSegment": "Equity, Derivative, Currency, Commodity",
            "ddpi": "Active",
            "mtf": "Deactive",
            "dataPlan": "Active" if self._plan_active(client_id) else "Deactive",
            "dataValidity": f"{plan_until.isoformat(' ')}.0",
        }
        return Answer(200, body, client_id)

    def _generate(self, method: str, query: Mapping[str, str], now: float) -> Answer:
        if method != "POST":
            return dhan_error(405, "Input_Exception", "DH-905", f"{GENERATE_PATH} takes POST")
        client_id = query.get("dhanClientId", "")
        login = self._tokens.logins.get(client_id)
        if login is None:
            return dhan_error(401, "Invalid_Authentication", "DH-901", "no headless login for this client id")
        pin, secret = login
        if query.get("pin") != pin:
            return dhan_error(401, "Invalid_Authentication", "DH-901", "PIN or TOTP invalid")
        at = self._totp_at() if self._totp_at is not None else None
        if not pyotp.TOTP(secret).verify(query.get("totp", ""), for_time=at, valid_window=1):
            return dhan_error(401, "Invalid_Authentication", "DH-901", "PIN or TOTP invalid")
        self.stats.generated += 1
        return self._issued(client_id, now)

    def _issued(self, client_id: str, now: float) -> Answer:
        token = self._mint(client_id)
        expires = self.expiry(now)
        self._tokens.issue(token, client_id, expires)
        when = dt.datetime.fromtimestamp(expires if expires is not None else now + 3650 * DAY_S, IST)
        body = {
            "dhanClientId": client_id,
            "accessToken": token,
            "expiryTime": when.replace(tzinfo=None, microsecond=0).isoformat(),
        }
        return Answer(200, body, client_id)
