"""One Dhan account checked from outside the service: is its token good, is its data plan active, does a
feed handshake succeed? (``tickgate accounts check``.)

Why a separate path from the feed pool: an operator adding an account wants an answer in seconds, with
the reason, before the gateway plans on its capacity. The profile (``GET /v2/profile``) validates the token
without touching the feed; the handshake opens one socket, reads for a moment whether Dhan disconnects it
(807/808/...), and says goodbye (code 12) before closing. That socket counts against the account's five:
run the check while the gateway is stopped, or while it leaves a socket free (reserved_sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tickgate.dhan.client import Credentials, feed_url
from tickgate.dhan.protocol import Disconnect, decode_frame, disconnect_message

PROFILE_PATH = "/v2/profile"
LISTEN_S = 1.0  # how long the handshake's socket waits for a disconnect packet before saying goodbye


@dataclass
class AccountCheck:
    """What the check found for one account; ``ok`` when all three passed. No field holds a secret."""

    name: str
    client_id: str
    token: str = "not checked"
    token_valid_until: str | None = None
    data_plan: str = "not checked"
    handshake: str = "not checked"
    ok: bool = False


async def check_account(
    name: str,
    credentials: Credentials | None,
    *,
    rest_url: str,
    feed: str,
    handshake: bool = True,
    timeout_s: float = 10.0,
) -> AccountCheck:
    """Check one account (see the module docstring); never raises for what the account answers."""
    if credentials is None:
        return AccountCheck(name, "", token="no access token configured")
    result = AccountCheck(name, credentials.client_id)
    good_token = await _profile(result, credentials, rest_url, timeout_s)
    if handshake and good_token:
        result.handshake = await _handshake(credentials, feed, timeout_s)
    elif not handshake:
        result.handshake = "skipped"
    result.ok = good_token and result.data_plan == "Active" and result.handshake in ("ok", "skipped")
    return result


async def _profile(result: AccountCheck, credentials: Credentials, rest_url: str, timeout_s: float) -> bool:
    headers = {"access-token": credentials.access_token, "Accept": "application/json"}
    try:
        async with httpx.AsyncClient(base_url=rest_url, timeout=timeout_s) as client:
            answer = await client.get(PROFILE_PATH, headers=headers)
    except httpx.HTTPError as exc:
        result.token = credentials.redact(f"profile unreachable: {type(exc).__name__}")
        return False
    if answer.status_code != 200:
        try:
            message = str(answer.json().get("errorMessage", ""))
        except ValueError:
            message = ""
        result.token = credentials.redact(f"refused: HTTP {answer.status_code} {message}".strip())
        return False
    body = answer.json()
    owner = str(body.get("dhanClientId", ""))
    if owner != credentials.client_id:
        result.token = f"belongs to another client id ({owner})"
        return False
    result.token = "valid"
    result.token_valid_until = body.get("tokenValidity")
    result.data_plan = str(body.get("dataPlan", "unknown"))
    return True


async def _handshake(credentials: Credentials, feed: str, timeout_s: float) -> str:
    try:
        async with asyncio.timeout(timeout_s):
            ws = await connect(feed_url(feed, credentials), user_agent_header=None, compression=None)
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 429:
            return "HTTP 429: the client id is blocked or its data plan lapsed"
        return f"HTTP {status}"
    except (OSError, TimeoutError) as exc:
        return credentials.redact(f"unreachable: {type(exc).__name__}")
    try:
        deadline = asyncio.get_running_loop().time() + LISTEN_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                async with asyncio.timeout(left):
                    frame = await ws.recv()
            except TimeoutError:
                break
            if isinstance(frame, bytes):
                for packet in decode_frame(frame):
                    if isinstance(packet, Disconnect):
                        return f"disconnected {packet.reason_code}: {packet.reason}"
        await ws.send(disconnect_message())
        return "ok"
    except ConnectionClosed as exc:
        return f"closed by the server ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
