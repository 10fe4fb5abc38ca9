"""The accounts file (issue 19): accounts named in TOML, their secrets only from the environment or a 0600
secrets file, clear refusals that never quote a secret; and ``tickgate accounts check`` against the
simulator (token, data plan, handshake) with a table and an exit code."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from tickgate.accounts import AccountsError, load_accounts
from tickgate.config import FeedLimits, Settings
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import RegistryUniverse, Simulator

from .conftest import TODAY

GOOD = "tok-good-4f1a9c"
SPARE = "tok-spare-77e0b2"


def settings_with(tmp: Path, accounts: str | None, secrets: str | None = None, mode: int = 0o600) -> Settings:
    update: dict[str, object] = {}
    if accounts is not None:
        (tmp / "accounts.toml").write_text(accounts)
        update["accounts_file"] = tmp / "accounts.toml"
    if secrets is not None:
        path = tmp / "secrets.toml"
        path.write_text(secrets)
        path.chmod(mode)
        update["secrets_file"] = path
    return Settings(data_dir=tmp).model_copy(update=update)


TWO = """
[[accounts]]
name = "main"
client_id = "1000000001"

[[accounts]]
name = "spare-2"
client_id = 1000000002
reserved_sockets = 2
"""


def test_without_a_file_dhan_client_id_alone_is_the_one_account(tmp_path: Path) -> None:
    nobody = Settings(data_dir=tmp_path).model_copy(update={"dhan_client_id": None})
    assert load_accounts(nobody, {}) == []  # offline: the embedded simulator's account
    settings = Settings(data_dir=tmp_path).model_copy(
        update={"dhan_client_id": SecretStr("1000000009"), "dhan_access_token": SecretStr(GOOD)}
    )
    (only,) = load_accounts(settings, {})
    assert (only.name, only.client_id, only.token_file) == ("default", "1000000009", "dhan-token.json")


def test_accounts_take_secrets_from_the_environment_before_the_secrets_file(tmp_path: Path) -> None:
    secrets = f'[main]\naccess_token = "{GOOD}"\npin = "1234"\n["spare-2"]\naccess_token = "from-file"\n'
    settings = settings_with(tmp_path, TWO, secrets)
    main, spare = load_accounts(settings, {"DHAN_ACCESS_TOKEN_SPARE_2": SPARE})
    assert main.access_token is not None
    assert main.access_token.get_secret_value() == GOOD
    assert main.pin is not None
    assert main.pin.get_secret_value() == "1234"
    assert main.totp_secret is None
    assert spare.access_token is not None
    assert spare.access_token.get_secret_value() == SPARE  # the environment wins
    assert spare.client_id == "1000000002"
    assert spare.limits(FeedLimits()).feed_sockets == 3
    assert spare.token_file == "dhan-token-spare-2.json"
    assert GOOD not in repr(main)
    assert GOOD not in str(main)


@pytest.mark.parametrize(
    ("accounts", "secrets", "mode", "says"),
    [
        (
            TWO.replace('client_id = "1000000001"', f'client_id = "1000000001"\naccess_token = "{GOOD}"'),
            None,
            0o600,
            "access_token must not be in the accounts file",
        ),
        (
            TWO.replace('name = "main"', 'name = "main"\ntotp = "JBSWY3DPEHPK3PXP"'),
            None,
            0o600,
            "totp must not be",
        ),
        (TWO, f'[main]\naccess_token = "{GOOD}"\n', 0o644, "must be 0600"),
        (TWO.replace("1000000002", "1000000001"), None, 0o600, "client_id used twice: 1000000001"),
        (TWO.replace("reserved_sockets = 2", "reserved_sockets = 5"), None, 0o600, "account 'spare-2'"),
        (TWO.replace('name = "main"', 'name = "main one"'), None, 0o600, "name must be"),
        ('[[accounts]]\nname = "x"\n', None, 0o600, "client_id is required"),
        ("nothing = 1\n", None, 0o600, "no [[accounts]] entries"),
        ("[[accounts]\n", None, 0o600, "not TOML"),
        (TWO, f'[main]\ntoken = "{GOOD}"\n', 0o600, "unknown field(s) token"),
    ],
)
def test_a_bad_accounts_file_is_refused_clearly_without_quoting_a_secret(
    tmp_path: Path, accounts: str, secrets: str | None, mode: int, says: str
) -> None:
    settings = settings_with(tmp_path, accounts, secrets, mode)
    with pytest.raises(AccountsError) as caught:
        load_accounts(settings, {})
    message = str(caught.value)
    assert says in message
    assert GOOD not in message
    assert "JBSWY3DPEHPK3PXP" not in message


async def test_accounts_check_prints_a_table_and_fails_on_a_bad_account(
    master: Path, registry: InstrumentRegistry, tmp_path: Path
) -> None:
    sim = Simulator(
        universe=RegistryUniverse(registry, TODAY),
        master=master,
        today=TODAY,
        rate=500.0,
        credentials={"1000000001": GOOD, "1000000002": SPARE},
    )
    await sim.start()
    try:
        (tmp_path / "accounts.toml").write_text(TWO)
        env = {
            **os.environ,
            "TICKGATE_ACCOUNTS_FILE": str(tmp_path / "accounts.toml"),
            "TICKGATE_FEED_URL": sim.url,
            "TICKGATE_REST_URL": sim.rest_url,
            "TICKGATE_DATA_DIR": str(tmp_path),
            "DHAN_ACCESS_TOKEN_MAIN": GOOD,
            "DHAN_ACCESS_TOKEN_SPARE_2": SPARE,
        }

        async def check() -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tickgate",
                "accounts",
                "check",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode()

        code, out = await check()
        assert code == 0, out
        assert out.count("yes") == 2, out
        assert "capacity if all pass: 40,000 instruments on 2 account(s)" in out
        sim.faults.expire_token("1000000002")
        sim.faults.block(60, "1000000001")
        code, out = await check()
        assert code == 1, out
        assert "access token expired" in out
        assert "Deactive" in out  # the blocked account's data plan
        for secret in (GOOD, SPARE):
            assert secret not in out
        assert sim.stats.max_sockets_per_client.get("1000000001", 0) <= 1
    finally:
        await sim.close()
