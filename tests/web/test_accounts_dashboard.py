"""The dashboard with two Dhan accounts (issue 19), in real headless Chromium: connections grouped by
account, and one account's expired token named in the banner while the other streams on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydantic import SecretStr

from tickgate.accounts import Account
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

from .conftest import Live, serving, web_settings
from .test_dashboard import page  # noqa: F401 - the Chromium page fixture

SPARE_ID = "1100000077"
SPARE_TOKEN = "web-spare-token-3b7c"


@pytest.fixture(scope="module")
def two_accounts(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, registry: InstrumentRegistry
) -> Iterator[Live]:
    simulator.faults.set_token(SPARE_TOKEN, SPARE_ID)
    service = TickgateService(
        web_settings(tmp_path_factory.mktemp("web-accounts")),
        accounts=[
            Account("main", DEFAULT_CLIENT_ID, SecretStr(DEFAULT_TOKEN)),
            Account("spare", SPARE_ID, SecretStr(SPARE_TOKEN)),
        ],
        feed_url=simulator.url,
        registry=registry,
        scheduler=False,
    )
    with serving(service) as running:
        yield running


def test_connections_are_grouped_by_account_and_a_lost_account_is_named(
    two_accounts: Live,
    page: Page,  # noqa: F811 - the fixture imported above
    simulator: Simulator,
) -> None:
    key = two_accounts.new_user("desk-of-two")
    page.goto(two_accounts.url + "/")
    page.fill("#key-input", key)
    page.click("#key-submit")
    heads = page.locator("#connections li.account-head")
    expect(heads).to_have_count(2)
    expect(heads.nth(0)).to_contain_text("account main")
    expect(heads.nth(1)).to_contain_text("account spare")
    expect(page.locator('#connections li.conn[data-account="spare"][data-state="up"]')).to_have_count(5)
    expect(page.locator("#account")).to_be_hidden()

    r = httpx.get(f"{simulator.http_url}/control/expire_token", params={"client_id": SPARE_ID})
    assert r.status_code == 200, r.text
    expect(page.locator('#connections li.conn[data-account="spare"][data-state="up"]')).to_have_count(0)
    expect(page.locator('#connections li.conn[data-account="main"][data-state="up"]')).to_have_count(5)
    expect(page.locator("#account")).to_be_visible()
    expect(page.locator("#account-notes li.bad").first).to_contain_text("Account spare: Feed stopped")
    assert SPARE_TOKEN not in page.content()
    health = httpx.get(f"{two_accounts.url}/api/v2/health").json()
    assert health["ready"], "one account streaming keeps the service ready"
    assert [a["name"] for a in health["accounts"]] == ["main", "spare"]
    assert health["accounts"][1]["fatal"] is not None
