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

from tickgate.sim import Simulator

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


ANALYTICS_SCREENSHOT = SCREENSHOT.with_name("dashboard-analytics.png")


def test_the_chain_shows_the_server_s_analytics(live: Live, page: Page) -> None:
    """IV and delta columns, OI change bars, the header (spot, forward, ATM IV, PCR, max pain, time to
    expiry) and the two charts, from the server's analytics: the numbers on the page are the API's."""
    key = live.new_user("quant")
    added = httpx.post(
        f"{live.url}/api/v2/watchlist", json={"symbol": "INFY", "strikes": 9}, headers={"X-API-Key": key}
    )
    assert added.status_code == 200, added.text
    entry = added.json()["entry"]
    page.goto(live.url + "/")
    page.fill("#key-input", key)
    page.click("#key-submit")
    page.locator(f'#watchlist li.wl-item[data-id="{entry["id"]}"]').click()
    expect(page.locator("#chain-analytics")).to_be_visible()
    expect(page.locator("#an-atm-iv")).to_have_text(re.compile(r"^\d+\.\d{2}%$"), timeout=20_000)
    page.wait_for_function(
        "n => [...document.querySelectorAll('#chain-body td.f-iv')].filter(td => /%$/.test(td.textContent))"
        ".length >= n",
        arg=6,
    )
    expect(page.locator("#oi-chart canvas")).to_have_count(1)
    expect(page.locator("#smile-chart canvas")).to_have_count(1)
    # The page's numbers against the API's. Both move with the market (the simulator's prices and open
    # interest), so a comparison that straddles an update is read again; a real mismatch stays one.
    deadline = time.monotonic() + 15.0
    while True:
        mismatches = _page_against_api(page, live, key, entry)
        if not mismatches or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert not mismatches
    ANALYTICS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ANALYTICS_SCREENSHOT), full_page=True)


def _page_against_api(page: Page, live: Live, key: str, entry: dict[str, object]) -> list[str]:
    """What the page shows that the API does not, read page then API then page (a push in between is
    accepted if either reading of the page agrees with the API)."""
    before = _analytics_on_page(page)
    chain = httpx.get(
        f"{live.url}/api/v2/option-chain/INFY",
        params={"expiry": entry["expiry"], "strikes": 9, "analytics": "true"},
        headers={"X-API-Key": key},
    ).json()
    after = _analytics_on_page(page)
    a = chain["analytics"]
    strike = a["atm_strike"]
    api_leg = next(r for r in chain["rows"] if r["strike"] == strike)["ce"]["analytics"]
    problems: list[str] = []
    for shown in (before, after):
        problems = []
        if shown["atm_iv"] != pytest.approx(100 * a["atm_iv"], abs=0.5):
            problems.append(f"ATM IV {shown['atm_iv']} vs {100 * a['atm_iv']}")
        if shown["atm_iv"] != pytest.approx(30.0, abs=3.0):  # the simulator's equity volatility is 30 %
            problems.append(f"ATM IV {shown['atm_iv']} is not the simulator's 30 %")
        pain = str(shown["max_pain"])
        if not (pain.startswith(f"{a['max_pain']:,.0f}") or pain.startswith(f"{a['max_pain']:,.2f}")):
            problems.append(f"max pain {pain!r} vs {a['max_pain']}")
        legs = shown["legs"]
        assert isinstance(legs, dict)
        as_js = str(int(strike)) if strike == int(strike) else str(strike)  # String(1290.0) is "1290" in JS
        if as_js not in legs:
            problems.append(f"no row for the ATM strike {as_js}")
        else:
            call_iv, delta = legs[as_js]
            if call_iv != pytest.approx(100 * api_leg["iv"], abs=0.5):
                problems.append(f"ATM call IV {call_iv} vs {100 * api_leg['iv']}")
            if not 0.3 < delta < 0.7:
                problems.append(f"ATM call delta {delta}")
        if not problems:
            return []
    return problems


def _analytics_on_page(page: Page) -> dict[str, object]:
    """The header's ATM IV and max pain, and each row's call IV and delta, in one evaluation."""
    shown: dict[str, object] = page.evaluate(
        """() => {
            const legs = {};
            for (const tr of document.querySelectorAll('#chain-body tr[data-strike]')) {
                const iv = tr.querySelector('td.ce.f-iv'), d = tr.querySelector('td.ce.f-delta');
                if (iv && d && /%$/.test(iv.textContent) && d.textContent.trim() !== '')
                    legs[tr.dataset.strike] = [parseFloat(iv.textContent), parseFloat(d.textContent)];
            }
            return {
                atm_iv: parseFloat(document.querySelector('#an-atm-iv').textContent),
                max_pain: document.querySelector('#an-max-pain').textContent,
                legs,
            };
        }"""
    )
    return shown


def test_the_account_banner_says_why_sockets_were_left_to_another_program(
    live: Live, page: Page, simulator: Simulator
) -> None:
    """Another program opens two sockets on the client id: Dhan drops two of ours with 805, tickgate gives
    them up rather than crowd it out in turn, and the page says so in a banner that stays."""
    key = live.new_user("operator")
    page.goto(live.url + "/")
    page.fill("#key-input", key)
    page.click("#key-submit")
    expect(page.locator('#connections li.conn[data-state="up"]')).to_have_count(5)
    expect(page.locator("#account")).to_be_hidden()
    r = httpx.get(
        f"{simulator.http_url}/control/foreign", params={"count": 2, "seconds": 3_600, "reconnect_s": 60}
    )
    assert r.status_code == 200, r.text
    expect(page.locator('#connections li.conn[data-state="given_up"]')).to_have_count(2)
    expect(page.locator("#account")).to_be_visible()
    expect(page.locator("#account-notes li.warn").first).to_contain_text("Holding 3 of 5 sockets")
    expect(page.locator("#account-notes li.warn").first).to_contain_text("805")
    expect(page.locator("#token-state")).to_be_hidden()  # credentials handed in: no token to show
