"""The dashboard in real headless Chromium against a real server, simulator and feed.

Load the page, give it a key, search RELIANCE, add its chain, watch the grid fill with live prices that
keep changing (pushed over the WebSocket), then add chains until capacity evicts the oldest one and the
page says so. A screenshot lands in ``bench/out/dashboard.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

from .conftest import CHROMIUM_ARGS, Live

SCREENSHOT = Path(__file__).resolve().parents[2] / "bench" / "out" / "dashboard.png"
PRICE = re.compile(r"^\d{1,3}(,\d{2,3})*\.\d{2}$")  # en-IN grouping: 1,23,456.78
LTP_CELLS = "#chain-body td.f-ltp"


@pytest.fixture
def page(chromium_path: str, tmp_path: Path) -> Iterator[Page]:
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        # The page asks /admin/audit once to learn whether the key is an admin's: a 403 there is expected.
        expected = "/api/v2/admin/audit" in msg.location.get("url", "") and "403" in msg.text
        if msg.type == "error" and not expected:
            problems.append(f"console: {msg.text} ({msg.location.get('url')})")

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        try:
            yield page
        finally:
            context.close()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


def ltp_texts(page: Page) -> list[str]:
    texts: list[str] = page.locator(LTP_CELLS).all_inner_texts()
    return texts


def wait_filled(page: Page, selector: str, at_least: int) -> None:
    """Wait until ``at_least`` cells matching ``selector`` hold a number (not the empty dash)."""
    page.wait_for_function(
        "([sel, n]) => [...document.querySelectorAll(sel)].filter(td => /[0-9]$/.test(td.textContent))"
        ".length >= n",
        arg=[selector, at_least],
    )


def add_from_search(page: Page, query: str) -> None:
    page.fill("#search", query)
    page.press("#search", "Enter")
    first = page.locator(f'#results li.result[data-symbol="{query}"]').first
    expect(first).to_be_visible()
    first.locator("button.add").click()


def test_dashboard_live_chain_and_eviction(live: Live, page: Page) -> None:
    key = live.new_user("trader")
    started = time.monotonic()

    # -- the key prompt, then the status panels fill from the API
    page.goto(live.url + "/")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", key)
    page.click("#key-submit")
    expect(page.locator("#key-dialog")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('tickgate.apiKey')") == key
    expect(page.locator("#connections li.conn")).to_have_count(5)
    expect(page.locator('#connections li.conn[data-state="up"]')).to_have_count(5)
    expect(page.locator("#feed-state")).to_have_text("feed 5/5 up")
    expect(page.locator("#capacity-total")).to_have_text("of 150")
    expect(page.locator("#cap-tier-b")).to_have_text("23")
    expect(page.locator("#cap-tier-a")).to_have_text("0")
    expect(page.locator("#push-state")).to_have_text("push live")

    # -- search RELIANCE and add its chain
    add_from_search(page, "RELIANCE")
    expect(page.locator("#events li.ev-add").first).to_contain_text("Added RELIANCE")
    expect(page.locator("#chain-title")).to_contain_text("RELIANCE")
    expect(page.locator('#watchlist li.wl-item[data-symbol="RELIANCE"]')).to_have_attribute(
        "data-state", "active"
    )
    rows = page.locator("#chain-body tr")
    expect(rows).to_have_count(25)
    atm = page.locator("#chain-body tr.atm")
    expect(atm).to_have_count(1)
    expect(atm.locator("td.strike")).to_contain_text("ATM")
    atm_strike = float(atm.get_attribute("data-strike") or "nan")
    meta = page.locator("#chain-meta").inner_text()
    assert f"ATM {atm_strike:,.0f}" in meta or f"ATM {atm_strike:,.2f}" in meta, meta
    # the ATM row is really highlighted: its cells are painted differently from a plain row's
    # (both sides: the ATM strike is in the money on one of them, and the highlight must win there too)
    painted = "tds => tds.map(td => getComputedStyle(td).backgroundColor)"
    atm_bgs = atm.locator("td.f-oi").evaluate_all(painted)  # OI: LTP cells flash when they tick
    other_bgs = {
        rows.nth(i).locator(f"td.{side}.f-oi").evaluate("td => getComputedStyle(td).backgroundColor")
        for i in (0, 24)
        for side in ("ce", "pe")
    }
    assert len(atm_bgs) == 2
    assert len(set(atm_bgs)) == 1
    assert atm_bgs[0] not in other_bgs

    # -- live prices: most LTP cells hold prices, and they keep changing with no reload
    wait_filled(page, LTP_CELLS, 40)
    expect(page.locator("#cap-tier-a")).to_have_text("51")
    expect(page.locator("#connections li.conn .conn-count").first).not_to_have_text("0 / 30")
    # full mode (the page's default) carries depth: bid/ask cells fill too, and OI where the feed sent it
    for field in ("bid", "ask", "oi"):
        wait_filled(page, f"#chain-body td.f-{field}", 10)
    first = ltp_texts(page)
    priced = [t for t in first if PRICE.match(t)]
    assert len(priced) >= 40, first
    assert all(float(t.replace(",", "")) > 0 for t in priced)
    changed = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        page.wait_for_timeout(500)
        now = ltp_texts(page)
        changed = sum(1 for a, b in zip(first, now, strict=True) if a != b and PRICE.match(b))
        if changed >= 5:
            break
    assert changed >= 5, "LTP cells did not update live"
    expect(page.locator("#chain-underlying strong")).to_have_text(PRICE)

    # -- two more chains: the third one does not fit and evicts RELIANCE, the least recently used
    add_from_search(page, "TCS")
    expect(page.locator("#events li.ev-add").first).to_contain_text("Added TCS")
    expect(page.locator("#chain-title")).to_contain_text("TCS")
    expect(page.locator("#banner")).to_be_hidden()
    add_from_search(page, "INFY")
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Added INFY, removed RELIANCE (capacity limit)")
    expect(page.locator("#events li.ev-evict").first).to_contain_text("removed RELIANCE")
    evicted = page.locator('#watchlist li.wl-item[data-symbol="RELIANCE"]')
    expect(evicted).to_have_attribute("data-state", "evicted")
    expect(evicted.locator(".badge")).to_have_text("evicted")
    expect(page.locator("#chain-title")).to_contain_text("INFY")
    wait_filled(page, LTP_CELLS, 40)
    expect(page.locator("#cap-tier-a")).to_have_text("102")  # TCS + INFY; RELIANCE's 51 went
    expect(page.locator("#cap-free")).to_have_text("25")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    # -- someone else's add evicts TCS (now the trader's LRU chain): the watchlist poll reports it
    page.click("#banner-close")
    expect(page.locator("#banner")).to_be_hidden()
    other = live.new_user("other")
    r = httpx.post(f"{live.url}/api/v2/watchlist", json={"symbol": "SBIN"}, headers={"X-API-Key": other})
    assert r.status_code == 200, r.text
    assert [e["symbol"] for e in r.json()["evicted"]] == ["TCS"]
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("TCS")
    expect(banner).to_contain_text("was removed from your watchlist")
    expect(page.locator('#watchlist li.wl-item[data-symbol="TCS"]')).to_have_attribute(
        "data-state", "evicted"
    )

    # -- remove the evicted RELIANCE entry
    page.locator('#watchlist li.wl-item[data-symbol="RELIANCE"] button.remove').click()
    expect(page.locator('#watchlist li.wl-item[data-symbol="RELIANCE"]')).to_have_count(0)
    expect(page.locator("#events li.ev-remove").first).to_contain_text("Removed RELIANCE")

    # -- server and user text is never parsed as HTML
    page.fill("#search", "<b>zz</b>")
    page.press("#search", "Enter")
    expect(page.locator("#results li.empty")).to_contain_text("<b>zz</b>")
    assert page.locator("#results b").count() == 0
    assert time.monotonic() - started < 60
