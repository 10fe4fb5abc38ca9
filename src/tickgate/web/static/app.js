// tickgate dashboard: plain ES module, no build step; one vendored library (uPlot, for the charts).
// REST under /api/v2 (X-API-Key header), live chain prices and analytics over WS /api/v2/stream.
// Every server string reaches the DOM through textContent, never innerHTML.

import uPlot from "./vendor/uplot-1.6.31/uPlot.esm.js";

const API = "/api/v2";
const KEY_STORE = "tickgate.apiKey";
const POLL_MS = 2000;
const MAX_EVENTS = 60;
const BANNER_MS = 30000;

const $ = (id) => document.getElementById(id);

/** Build an element: el("td", {className: "x", dataset: {k: "v"}, title, onclick}, child, "text"). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else if (name === "style" || name === "role" || name.includes("-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// -- formatting ----------------------------------------------------------------------------------------

const INT = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 0 });
const PRICE = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const DASH = "–";
const fmtInt = (n) => (n === null || n === undefined ? DASH : INT.format(n));
const fmtPrice = (n) => (n === null || n === undefined ? DASH : PRICE.format(n));
const fmtPct = (n) => (n === null || n === undefined ? DASH : `${n > 0 ? "+" : ""}${n.toFixed(2)}%`);
const fmtStrike = (n) => (Number.isInteger(n) ? INT.format(n) : PRICE.format(n));
const clockTime = (d = new Date()) => d.toLocaleTimeString("en-GB", { hour12: false });

// -- state ---------------------------------------------------------------------------------------------

const state = {
  key: localStorage.getItem(KEY_STORE) || "",
  running: false,
  pollTimer: null,
  entries: [],
  lastStates: new Map(), // watchlist id -> "active" | "evicted"
  announced: new Set(), // group ids whose eviction was already shown
  selected: null, // watchlist id shown in the grid
  chain: null, // {id, symbol, atm, ltp, underlyingKey, cells: Map<key, {side, tds}>}
  chainLoading: false,
  chainReloadTimer: null,
  ws: null,
  wsBackoff: 500,
  wsItem: null, // ["chain:<id>", "analytics:<id>"] subscribed on the push channel
  admin: null, // null: not known yet; true: the key may read /admin/audit (every user's evictions)
  auditSeen: 0, // highest audit entry id shown
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-API-Key": state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network", `server unreachable (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const message = error.message || `HTTP ${response.status}`;
    if (response.status === 401) askForKey("That API key was not accepted.");
    throw new ApiError(response.status, error.code || "http", message);
  }
  return data;
}

// -- API key -------------------------------------------------------------------------------------------

function askForKey(message) {
  stop();
  const dialog = $("key-dialog");
  const error = $("key-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("key-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

async function useKey(key) {
  state.key = key.trim();
  const error = $("key-error");
  try {
    await api("/watchlist");
  } catch (err) {
    if (err.status !== 401) {
      error.hidden = false;
      error.textContent = err.message;
    }
    return;
  }
  localStorage.setItem(KEY_STORE, state.key);
  $("key-dialog").close();
  start();
}

// -- lifecycle -----------------------------------------------------------------------------------------

function start() {
  if (state.running) return;
  state.running = true;
  addEvent("info", `Connected to ${location.host}`);
  poll();
  connectPush();
}

function stop() {
  state.running = false;
  clearTimeout(state.pollTimer);
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    ws.close();
  }
}

let pollSeq = 0;

async function poll() {
  clearTimeout(state.pollTimer);
  if (!state.running) return;
  const seq = ++pollSeq;
  const [subs, status, watchlist] = await Promise.allSettled([
    api("/subscriptions"),
    api("/ws/status"),
    api("/watchlist"),
  ]);
  if (!state.running || seq !== pollSeq) return; // a newer poll is under way: it renders and reschedules
  if (subs.status === "fulfilled") renderCapacity(subs.value);
  if (status.status === "fulfilled") renderConnections(status.value, subs.status === "fulfilled" ? subs.value : null);
  if (watchlist.status === "fulfilled") renderWatchlist(watchlist.value.entries);
  const failed = [subs, status, watchlist].find((r) => r.status === "rejected");
  if (failed) setPill($("feed-state"), `api: ${failed.reason.message}`, "bad");
  if (state.admin !== false) await pollAudit();
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, POLL_MS);
}

// An admin key also sees the audit log: evictions and suspensions of every user, not only its own.
const AUDIT_ACTIONS = "EVICT,SUSPEND,RESUME,REJECT";

async function pollAudit() {
  let page;
  try {
    page = await api(`/admin/audit?limit=20&action=${AUDIT_ACTIONS}`);
  } catch (err) {
    if (err.status === 403) state.admin = false; // a normal user: its own evictions come from the watchlist
    return;
  }
  const first = state.admin === null;
  state.admin = true;
  const fresh = page.entries.filter((e) => e.id > state.auditSeen).reverse(); // oldest first
  for (const e of fresh) {
    state.auditSeen = Math.max(state.auditSeen, e.id);
    if (first) continue; // history before the page opened is not news
    if (e.action === "EVICT" && state.announced.has(e.group_id)) continue; // already told, with context
    const owner = e.owner ? ` of user ${e.owner}` : e.tier === "B" ? " (Tier B)" : "";
    const text = `${e.action.toLowerCase()} ${e.group_id || ""}${owner}: ${fmtInt(e.count)} instruments${e.reason ? ` — ${e.reason}` : ""}`;
    addEvent(e.action === "EVICT" ? "evict" : "warn", text);
  }
}

// -- status: capacity and connections ------------------------------------------------------------------

function setPill(node, text, kind) {
  node.textContent = text;
  node.className = `pill${kind ? ` ${kind}` : ""}`;
}

function renderCapacity(subs) {
  const cap = subs.capacity;
  const pct = (n) => (cap.total ? `${(100 * n) / cap.total}%` : "0%");
  $("gauge-b").style.width = pct(cap.tier_b);
  $("gauge-a").style.width = pct(cap.tier_a);
  $("gauge").title = `Tier B ${fmtInt(cap.tier_b)} · Tier A ${fmtInt(cap.tier_a)} · free ${fmtInt(cap.free)}`;
  $("cap-tier-b").textContent = fmtInt(cap.tier_b);
  $("cap-tier-a").textContent = fmtInt(cap.tier_a);
  $("cap-free").textContent = fmtInt(cap.free);
  $("capacity-total").textContent = `of ${fmtInt(cap.total)}`;
  const used = cap.total ? Math.round((100 * (cap.total - cap.free)) / cap.total) : 0;
  let sub = `${used}% used · placed ${fmtInt(subs.placed)} of ${fmtInt(subs.desired)} wanted`;
  if (cap.suspended_keys) sub += ` · ${fmtInt(cap.suspended_keys)} suspended`;
  $("cap-sub").textContent = sub;
  $("capacity-card").classList.toggle("full", cap.free === 0);
}

function renderConnections(status, subs) {
  const conns = status.connections;
  const total = subs ? subs.capacity.total : 0;
  const perSocket = conns.length && total ? total / conns.length : 0;
  const list = $("connections");
  // Several Dhan accounts: each account's sockets under a heading with its own count (a failure domain).
  const accounts = [...new Set(conns.map((c) => c.account))];
  const heading = (name) => {
    const mine = conns.filter((c) => c.account === name);
    const up = mine.filter((c) => c.state === "up").length;
    const carried = mine.reduce((n, c) => n + c.instruments, 0);
    return el(
      "li",
      { className: "account-head", dataset: { account: name } },
      el("span", { text: `account ${name}` }),
      el("span", { className: "mono", text: `${up}/${mine.length} up · ${fmtInt(carried)}` }),
    );
  };
  list.replaceChildren(
    ...conns.flatMap((c, i) => {
      const head = accounts.length > 1 && (i === 0 || conns[i - 1].account !== c.account) ? [heading(c.account)] : [];
      const share = perSocket ? Math.min(100, (100 * c.instruments) / perSocket) : 0;
      const age = c.last_data_age_s === null ? "no data yet" : `data ${c.last_data_age_s.toFixed(1)}s ago`;
      const details = [`reconnects ${c.reconnects}`, age];
      if (c.last_disconnect) details.push(`last down: ${c.last_disconnect}`);
      if (c.next_attempt_in_s !== null) details.push(`retry in ${c.next_attempt_in_s.toFixed(1)}s`);
      return [
        ...head,
        el(
          "li",
          {
            className: `conn state-${c.state}`,
            dataset: { conn: String(c.id), state: c.state, account: c.account },
            title: details.join(" · "),
          },
          el("span", { className: "conn-id", text: `#${c.id}` }),
          el("span", { className: "bar" }, el("span", { className: "fill", style: `width:${share}%` })),
          el("span", { className: "conn-count mono", text: perSocket ? `${fmtInt(c.instruments)} / ${fmtInt(perSocket)}` : fmtInt(c.instruments) }),
          el("span", { className: `badge state-${c.state}`, text: c.state }),
        ),
      ];
    }),
  );
  const up = conns.filter((c) => c.state === "up").length;
  setPill($("feed-state"), `feed ${up}/${conns.length} up`, up === conns.length ? "ok" : up ? "warn" : "bad");
  const alert = $("alert");
  alert.hidden = !status.alert;
  alert.textContent = status.alert || "";
  renderAccount(status);
}

function fmtWhen(iso) {
  // Market time as the server says it (IST): the wall clock of the exchange, whatever the browser's zone.
  return iso ? iso.replace("T", " ").slice(0, 16) : "unknown";
}

// The account's state (tickgate.service.account): a persistent banner for what an operator must know.
function renderAccount(status) {
  const all = status.accounts && status.accounts.length ? status.accounts : [status.account];
  const notes = [];
  for (const a of all) {
    if (!a) continue;
    const who = all.length > 1 ? `Account ${a.name}: ` : "";
    if (a.fatal) notes.push(["bad", `${who}Feed stopped: ${a.fatal.reason}. To leave it: ${a.fatal.how_to_leave}.`]);
    if (a.blocked_until) notes.push(["bad", `${who}Dhan answered 429: the account cools off until ${fmtWhen(a.blocked_until)}.`]);
    const s = a.sockets;
    if (s && s.given_up.length) {
      const probe = s.next_probe_in_s === null ? "" : ` Next probe in ${Math.round(s.next_probe_in_s / 60)} min.`;
      notes.push(["warn", `${who}Holding ${s.tickgate} of ${s.configured} sockets: ${s.why}.${probe}`]);
    }
    const t = a.token;
    if (t && t.failures && t.last_error) notes.push(["warn", `${who}Token renewal failing (${t.failures}×): ${t.last_error}`]);
    if (a === all[0] && a.master && a.master.age_days > 0) {
      notes.push(["warn", `Instrument master is ${a.master.age_days} day(s) old (${a.master.file}): today's download failed.`]);
    }
    if (a !== all[0]) continue; // the header's token pill is the first account's; the others show in the notes
    const pill = $("token-state");
    pill.hidden = !t;
    if (t) {
      const renewed = `renewed ${fmtWhen(t.last_renewal)}`;
      setPill(pill, `token to ${fmtWhen(t.expires_at)}`, t.failures ? "warn" : "ok");
      pill.title = `Dhan token (${t.source}) expires ${fmtWhen(t.expires_at)}, ${renewed}`;
    }
  }
  if (status.warning) notes.push(["warn", status.warning]);
  $("account-notes").replaceChildren(...notes.map(([kind, text]) => el("li", { className: kind, text })));
  $("account").hidden = notes.length === 0;
}

// -- watchlist -----------------------------------------------------------------------------------------

function entryLabel(e) {
  return e.expiry ? `${e.symbol} ${e.expiry}` : e.symbol;
}

function renderWatchlist(entries) {
  // Evictions by someone else's add only show up here: announce each active -> evicted transition once.
  for (const e of entries) {
    const before = state.lastStates.get(e.id);
    if (before === "active" && e.state === "evicted" && !state.announced.has(e.group_id)) {
      state.announced.add(e.group_id);
      const text = `${entryLabel(e)} was removed from your watchlist (${e.state_reason || "capacity limit"})`;
      showBanner(text);
      addEvent("evict", text);
    }
  }
  state.lastStates = new Map(entries.map((e) => [e.id, e.state]));
  state.entries = entries;
  $("watchlist-count").textContent = entries.length ? `${entries.length}` : "";
  const list = $("watchlist");
  if (!entries.length) {
    list.replaceChildren(el("li", { className: "empty", text: "Nothing yet: search and add a chain." }));
  } else {
    list.replaceChildren(...entries.map(watchlistItem));
  }
  // Keep the grid in step: pick something to show, follow the ATM, drop removed chains.
  const shown = entries.find((e) => e.id === state.selected);
  if (state.selected !== null && !shown) clearChain();
  if (state.selected === null) {
    const first = entries.find((e) => e.state === "active");
    if (first) selectChain(first.id);
  } else if (shown && state.chain && shown.atm_strike !== null && shown.atm_strike !== state.chain.atm) {
    scheduleChainReload(0);
  }
  if (shown) updateChainNote(shown);
}

function watchlistItem(e) {
  const evicted = e.state === "evicted";
  const status = evicted ? "evicted" : e.suspended ? "suspended" : e.placed ? "live" : "pending";
  const meta = [`${e.strikes ?? 0} strikes`, e.mode];
  if (!evicted) meta.push(`${fmtInt(e.size)} keys`);
  if (e.atm_strike !== null) meta.push(`ATM ${fmtStrike(e.atm_strike)}`);
  if (e.pinned) meta.push("pinned");
  const item = el(
    "li",
    {
      className: `wl-item status-${status}${e.id === state.selected ? " selected" : ""}`,
      dataset: { id: String(e.id), symbol: e.symbol, state: e.state, status },
      title: e.state_reason || "",
    },
    el(
      "button",
      { type: "button", className: "wl-pick", onclick: () => selectChain(e.id) },
      el("span", { className: "wl-symbol", text: e.symbol }),
      el("span", { className: "wl-expiry muted", text: e.expiry || "" }),
      el("span", { className: "wl-meta muted", text: meta.join(" · ") }),
      evicted ? el("span", { className: "wl-reason", text: e.state_reason || "evicted" }) : null,
    ),
    el("span", { className: `badge status-${status}`, text: status }),
  );
  if (evicted) {
    item.append(
      el("button", {
        type: "button",
        className: "ghost small",
        title: "Subscribe this chain again",
        text: "re-add",
        onclick: () => addChain(e.symbol, e.exchange, { expiry: e.expiry, strikes: e.strikes || undefined, mode: e.mode }),
      }),
    );
  }
  item.append(
    el("button", {
      type: "button",
      className: "ghost small remove",
      title: `Remove ${entryLabel(e)}`,
      "aria-label": `Remove ${entryLabel(e)}`,
      text: "✕",
      onclick: () => removeEntry(e),
    }),
  );
  return item;
}

async function addChain(symbol, exchange, extra = {}) {
  const body = { symbol, mode: extra.mode || $("mode").value || "full" };
  if (exchange) body.exchange = exchange;
  if (extra.expiry) body.expiry = extra.expiry;
  const strikes = extra.strikes ?? ($("strikes").value ? Number($("strikes").value) : undefined);
  if (strikes !== undefined) body.strikes = strikes;
  let result;
  try {
    result = await api("/watchlist", { method: "POST", body });
  } catch (err) {
    addEvent("error", `${symbol}: ${err.message}`);
    toast(`${symbol}: ${err.message}`, "bad");
    return;
  }
  if (result.evicted.length) {
    for (const ev of result.evicted) state.announced.add(ev.group);
    const detail = result.evicted
      .map((ev) => {
        const owner = ev.user_id === null ? "Tier B" : state.entries.some((e) => e.group_id === ev.group) ? "yours" : `user ${ev.user_id}`;
        return `${ev.symbol || ev.group}${ev.expiry ? ` ${ev.expiry}` : ""} (${fmtInt(ev.size)} instruments, ${owner})`;
      })
      .join(", ");
    showBanner(result.message);
    addEvent("evict", `${result.message}: ${detail}`);
  } else {
    addEvent(result.status === "added" ? "add" : "info", result.message);
    toast(result.message, "ok");
  }
  if (result.suspended) addEvent("warn", `${result.entry.symbol} is suspended: no connection has room for it yet`);
  state.lastStates.set(result.entry.id, "active");
  await selectChain(result.entry.id, result.entry);
  await poll(); // capacity, connections and the watchlist changed: show it now, not at the next tick
}

async function removeEntry(e) {
  try {
    await api(`/watchlist/${e.id}`, { method: "DELETE" });
  } catch (err) {
    addEvent("error", err.message);
    return;
  }
  addEvent("remove", `Removed ${entryLabel(e)}`);
  if (state.selected === e.id) clearChain();
  await poll();
}

// -- search --------------------------------------------------------------------------------------------

let searchSeq = 0;

async function runSearch() {
  const q = $("search").value.trim();
  const list = $("results");
  if (!q) {
    list.replaceChildren();
    return;
  }
  const seq = ++searchSeq;
  let data;
  try {
    data = await api(`/instruments/search?q=${encodeURIComponent(q)}&limit=12`);
  } catch (err) {
    if (seq === searchSeq) list.replaceChildren(el("li", { className: "empty error", text: err.message }));
    return;
  }
  if (seq !== searchSeq) return;
  if (!data.results.length) {
    list.replaceChildren(el("li", { className: "empty", text: `No instrument matches “${q}”.` }));
    return;
  }
  list.replaceChildren(
    ...data.results.map((r) => {
      const underlying = r.underlying_symbol || r.symbol;
      return el(
        "li",
        { className: "result", dataset: { key: r.key, symbol: r.symbol } },
        el(
          "div",
          { className: "result-text" },
          el("span", { className: "result-symbol", text: r.trading_symbol || r.symbol }),
          el("span", { className: "result-name muted", text: r.display_name }),
          el("span", { className: "result-meta muted mono", text: `${r.instrument} · ${r.exchange} · ${r.key}` }),
        ),
        el("button", {
          type: "button",
          className: "add small",
          title: `Add the ${underlying} option chain to your watchlist`,
          text: "+ chain",
          onclick: () => addChain(underlying, r.exchange),
        }),
      );
    }),
  );
}

// -- option chain --------------------------------------------------------------------------------------

const CE_FIELDS = ["oi_change", "oi", "volume", "iv", "delta", "change_pct", "bid", "ask", "ltp"];
const PE_FIELDS = ["ltp", "bid", "ask", "change_pct", "delta", "iv", "volume", "oi", "oi_change"];
const FORMAT = { oi: fmtInt, volume: fmtInt, change_pct: fmtPct, bid: fmtPrice, ask: fmtPrice, ltp: fmtPrice };
const ANALYTICS_FIELDS = ["iv", "delta", "oi_change"]; // filled from the server's analytics, not quotes

function clearChain() {
  state.selected = null;
  state.chain = null;
  pushSubscribe(null);
  $("chain-body").replaceChildren();
  $("chain-title").textContent = "Option chain";
  $("chain-meta").textContent = "";
  $("chain-underlying").textContent = "";
  $("chain-note").hidden = true;
  $("chain-empty").hidden = false;
  $("chain-analytics").hidden = true;
  $("charts").hidden = true;
  for (const li of document.querySelectorAll(".wl-item.selected")) li.classList.remove("selected");
}

async function selectChain(id, entry = null) {
  state.selected = id;
  for (const li of document.querySelectorAll(".wl-item")) li.classList.toggle("selected", li.dataset.id === String(id));
  const e = entry || state.entries.find((x) => x.id === id);
  if (!e) return;
  await loadChain(e, true);
}

function scheduleChainReload(delay = 1500) {
  if (state.chainReloadTimer) return;
  state.chainReloadTimer = setTimeout(async () => {
    state.chainReloadTimer = null;
    const e = state.entries.find((x) => x.id === state.selected);
    if (e) await loadChain(e, false);
  }, delay);
}

async function loadChain(e, recentre) {
  const params = new URLSearchParams();
  if (e.expiry) params.set("expiry", e.expiry);
  if (e.strikes) params.set("strikes", String(e.strikes));
  if (e.exchange) params.set("exchange", e.exchange);
  let data;
  try {
    params.set("analytics", "true");
    data = await api(`/option-chain/${encodeURIComponent(e.symbol)}?${params}`);
  } catch (err) {
    addEvent("error", `${e.symbol} chain: ${err.message}`);
    return;
  }
  if (state.selected !== e.id) return; // the user moved on meanwhile
  renderChain(data, e, recentre);
  pushSubscribe([`chain:${e.id}`, `analytics:${e.id}`]);
}

function renderChain(data, e, recentre) {
  const cells = new Map();
  const spot = data.underlying.quote && data.underlying.quote.ltp !== null ? data.underlying.quote.ltp : data.ltp;
  const rows = data.rows.map((row) => {
    const tr = el("tr", { className: row.atm ? "atm" : "", dataset: { strike: String(row.strike) } });
    const side = (leg, name, fields) => {
      const tds = {};
      for (const field of fields) {
        tds[field] = el("td", { className: `${name} f-${field}`, dataset: { side: name, field } }, DASH);
      }
      if (leg) {
        cells.set(leg.key, { side: name, tds, strike: row.strike });
        tr.dataset[name] = leg.key;
        if (leg.quote) fillQuote(tds, leg.quote, false);
        if (leg.analytics) fillAnalytics(tds, leg.analytics);
      }
      return fields.map((f) => tds[f]);
    };
    tr.append(...side(row.ce, "ce", CE_FIELDS));
    tr.append(el("td", { className: "strike", text: fmtStrike(row.strike) }, row.atm ? el("span", { className: "atm-tag", text: "ATM" }) : null));
    tr.append(...side(row.pe, "pe", PE_FIELDS));
    return tr;
  });
  state.chain = { id: e.id, symbol: data.symbol, atm: data.atm_strike, underlyingKey: data.underlying.key, cells, rows: data.rows };
  $("chain-body").replaceChildren(...rows);
  shadeMoneyness(spot);
  $("chain-empty").hidden = rows.length > 0;
  $("chain-title").textContent = `${data.symbol} ${data.expiry}`;
  $("chain-meta").textContent = `${data.exchange} · ${data.expiry_kind} · ATM ${fmtStrike(data.atm_strike)} · step ${fmtStrike(data.step)} · ${data.strikes} of ${data.listed} strikes`;
  renderUnderlying(data.underlying.quote, data.ltp);
  if (data.analytics) {
    const legs = [];
    for (const row of data.rows) {
      for (const leg of [row.ce, row.pe]) if (leg && leg.analytics) legs.push({ key: leg.key, ...leg.analytics });
    }
    applyAnalytics({ analytics: data.analytics, legs });
  }
  updateChainNote(e);
  if (recentre) {
    const atm = $("chain-body").querySelector("tr.atm");
    const box = document.querySelector(".chain-scroll");
    if (atm && box) box.scrollTop = Math.max(0, atm.offsetTop - box.clientHeight / 2);
  }
}

function updateChainNote(e) {
  const note = $("chain-note");
  if (!state.chain || state.chain.id !== e.id) return;
  if (e.state === "evicted") {
    note.textContent = `Evicted: ${e.state_reason || "capacity limit"}. Prices below are frozen; re-add the chain to get them live again.`;
    note.className = "note bad";
    note.hidden = false;
  } else if (e.suspended) {
    note.textContent = "Suspended: no feed connection has room for this chain right now; it resumes when capacity frees up.";
    note.className = "note warn";
    note.hidden = false;
  } else {
    note.hidden = true;
  }
}

function renderUnderlying(q, fallback) {
  const node = $("chain-underlying");
  const ltp = q && q.ltp !== null ? q.ltp : fallback;
  node.replaceChildren(
    el("span", { className: "muted", text: "Spot " }),
    el("strong", { text: fmtPrice(ltp) }),
  );
  if (q && q.change_pct !== null && q.change_pct !== undefined) {
    node.append(" ", el("span", { className: q.change_pct >= 0 ? "pos" : "neg", text: fmtPct(q.change_pct) }));
  }
}

function shadeMoneyness(spot) {
  if (!state.chain || spot === null || spot === undefined) return;
  for (const tr of $("chain-body").children) {
    const strike = Number(tr.dataset.strike);
    tr.classList.toggle("itm-ce", strike < spot);
    tr.classList.toggle("itm-pe", strike > spot);
  }
}

function fillQuote(tds, q, flash) {
  // A price that is not live (a REST snapshot before the first trade, the last close, or none) is greyed.
  const notLive = q.source !== undefined && q.source !== "feed";
  for (const td of Object.values(tds)) {
    td.classList.toggle("not-live", notLive);
    td.title = notLive ? `${q.source === "none" ? "no price yet" : `${q.source} snapshot`}` : "";
  }
  for (const [field, td] of Object.entries(tds)) {
    const value = q[field];
    if (value === undefined) continue;
    const text = FORMAT[field](value);
    if (td.textContent === text) continue;
    const before = td.dataset.v === undefined ? null : Number(td.dataset.v);
    td.textContent = text;
    if (value !== null) td.dataset.v = String(value);
    if (field === "change_pct") {
      td.classList.toggle("pos", value > 0);
      td.classList.toggle("neg", value < 0);
    }
    if (flash && field === "ltp" && before !== null && value !== null && value !== before) {
      td.classList.remove("up", "down");
      void td.offsetWidth; // restart the flash animation
      td.classList.add(value > before ? "up" : "down");
    }
  }
}

function fmtIv(v) {
  return v === null || v === undefined ? DASH : `${(100 * v).toFixed(2)}%`;
}

function fmtGreek(v) {
  return v === null || v === undefined ? DASH : v.toFixed(3);
}

function fillAnalytics(tds, a) {
  tds.iv.textContent = fmtIv(a.iv);
  tds.iv.title = a.reason === "OK" ? "" : `no IV: ${a.reason}`;
  tds.delta.textContent = fmtGreek(a.delta);
  const td = tds.oi_change;
  if (a.oi_change === null || a.oi_change === undefined) {
    td.replaceChildren(DASH);
    return;
  }
  // A signed bar under the number: its width against the largest change in the chain (set by the caller).
  const scale = state.chain && state.chain.oiScale ? state.chain.oiScale : Math.abs(a.oi_change) || 1;
  const width = Math.min(100, (100 * Math.abs(a.oi_change)) / scale);
  const kind = a.oi_change >= 0 ? "pos" : "neg";
  td.replaceChildren(el("i", { className: `bar ${kind}`, style: `width:${width}%` }), el("span", { text: fmtInt(a.oi_change) }));
  td.dataset.v = String(a.oi_change);
}

function fmtYears(years) {
  const days = years * 365;
  return days >= 1 ? `${days.toFixed(1)} d` : `${(days * 24).toFixed(1)} h`;
}

// The server's analytics of the chain on screen (the REST answer, then each push recomputation).
function applyAnalytics(msg) {
  const chain = state.chain;
  if (!chain) return;
  const a = msg.analytics;
  chain.analytics = a;
  chain.oiScale = Math.max(1, ...msg.legs.map((l) => Math.abs(l.oi_change || 0)));
  for (const leg of msg.legs) {
    const target = chain.cells.get(leg.key);
    if (target) fillAnalytics(target.tds, leg);
  }
  $("chain-analytics").hidden = false;
  $("an-spot").textContent = a.spot === null ? DASH : fmtPrice(a.spot);
  $("an-forward").textContent = a.forward === null ? DASH : `${fmtPrice(a.forward)} (${a.forward_source})`;
  $("an-atm-iv").textContent = fmtIv(a.atm_iv);
  $("an-pcr").textContent = a.pcr_oi === null ? DASH : a.pcr_oi.toFixed(2);
  $("an-max-pain").textContent = a.max_pain === null ? DASH : `${fmtStrike(a.max_pain)} (${a.max_pain_strikes} strikes)`;
  $("an-rr").textContent = a.risk_reversal_25d === null ? DASH : `${(100 * a.risk_reversal_25d).toFixed(2)} pts`;
  $("an-expiry").textContent = fmtYears(a.years_to_expiry);
  drawCharts(chain, msg.legs, a);
}

const charts = { oi: null, smile: null };

function chartData(chain, legs, a) {
  const strikes = chain.rows.map((r) => r.strike);
  const by = new Map(legs.map((l) => [l.key, l]));
  const pick = (side, field) => chain.rows.map((r) => {
    const leg = r[side] && by.get(r[side].key);
    return leg && leg[field] !== null && leg[field] !== undefined ? leg[field] : null;
  });
  const oi = (side) => chain.rows.map((r) => {
    const q = r[side] && chain.cells.get(r[side].key);
    const v = q && q.tds.oi.dataset.v;
    return v === undefined ? null : Number(v);
  });
  const marker = (strike) => strikes.map((s) => (s === strike ? 0 : null));
  return {
    oi: [strikes, oi("ce"), oi("pe"), pick("ce", "oi_change"), pick("pe", "oi_change"), marker(a.max_pain), marker(a.atm_strike)],
    smile: [strikes, pick("ce", "iv").map((v) => (v === null ? null : 100 * v)), pick("pe", "iv").map((v) => (v === null ? null : 100 * v))],
  };
}

function drawCharts(chain, legs, a) {
  const box = $("charts");
  box.hidden = false;
  const data = chartData(chain, legs, a);
  const width = Math.max(280, Math.floor(box.clientWidth / 2) - 16);
  if (charts.oi && charts.oi.chainId === chain.id) {
    charts.oi.setData(data.oi);
    charts.smile.setData(data.smile);
    return;
  }
  if (charts.oi) charts.oi.destroy();
  if (charts.smile) charts.smile.destroy();
  const bars = uPlot.paths.bars({ size: [0.4, 40] });
  const x = { label: "strike" };
  charts.oi = new uPlot(
    {
      width,
      height: 220,
      scales: { x: { time: false } },
      axes: [x, { label: "OI" }],
      series: [
        {},
        { label: "Call OI", stroke: "#3fb950", fill: "rgba(63,185,80,0.35)", paths: bars },
        { label: "Put OI", stroke: "#f85149", fill: "rgba(248,81,73,0.35)", paths: bars },
        { label: "Call OI chg", stroke: "#7ee787", width: 2 },
        { label: "Put OI chg", stroke: "#ffa198", width: 2 },
        { label: "Max pain", stroke: "#d29922", points: { size: 12, fill: "#d29922" }, paths: () => null },
        { label: "ATM", stroke: "#58a6ff", points: { size: 12, fill: "#58a6ff" }, paths: () => null },
      ],
    },
    data.oi,
    $("oi-chart"),
  );
  charts.smile = new uPlot(
    {
      width,
      height: 220,
      scales: { x: { time: false } },
      axes: [x, { label: "IV %" }],
      series: [
        {},
        { label: "Call IV", stroke: "#3fb950", width: 2, points: { size: 5 } },
        { label: "Put IV", stroke: "#f85149", width: 2, points: { size: 5 } },
      ],
    },
    data.smile,
    $("smile-chart"),
  );
  charts.oi.chainId = chain.id;
}

function applyQuotes(quotes) {
  const chain = state.chain;
  if (!chain) return;
  for (const q of quotes) {
    if (q.key === chain.underlyingKey) {
      renderUnderlying(q, null);
      if (q.ltp !== null) shadeMoneyness(q.ltp);
      continue;
    }
    const target = chain.cells.get(q.key);
    if (target) fillQuote(target.tds, q, true);
    // Other keys: a chain we just left, or rows of a window that moved with the ATM — the watchlist poll
    // sees the new ATM and reloads the grid (see renderWatchlist).
  }
}

// -- push channel --------------------------------------------------------------------------------------

function connectPush() {
  if (!state.running || state.ws) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}${API}/stream?key=${encodeURIComponent(state.key)}&max_hz=10`);
  state.ws = ws;
  setPill($("push-state"), "push connecting", "warn");
  ws.addEventListener("open", () => {
    state.wsBackoff = 500;
    setPill($("push-state"), "push live", "ok");
    if (state.wsItem) ws.send(JSON.stringify({ subscribe: state.wsItem }));
  });
  ws.addEventListener("message", (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "quotes") applyQuotes(msg.quotes);
    else if (msg.type === "analytics") {
      if (state.chain && msg.chain === state.chain.id) {
        const cols = msg.legs; // columns: {key: [...], iv: [...], ...}
        const legs = cols.key.map((key, i) => {
          const leg = { key };
          for (const [name, values] of Object.entries(cols)) leg[name] = values[i];
          return leg;
        });
        applyAnalytics({ analytics: msg.analytics, legs });
      }
    }
    else if (msg.type === "subscribed" && msg.rejected && msg.rejected.length) {
      for (const r of msg.rejected) addEvent("warn", `live updates refused for ${r.item}: ${r.reason}`);
    }
  });
  ws.addEventListener("close", (ev) => {
    if (state.ws !== ws) return; // replaced or stopped on purpose
    state.ws = null;
    setPill($("push-state"), "push offline", "bad");
    if (ev.code === 4401) {
      askForKey("The push channel refused that API key.");
      return;
    }
    if (ev.reason) addEvent("warn", `push channel closed: ${ev.reason}`);
    const delay = state.wsBackoff;
    state.wsBackoff = Math.min(state.wsBackoff * 2, 8000);
    setTimeout(connectPush, delay);
  });
}

function pushSubscribe(items) {
  // items: the push items of the chain on screen (its quotes and its analytics), or null for none.
  const ws = state.ws;
  const open = ws && ws.readyState === WebSocket.OPEN;
  if (JSON.stringify(items) === JSON.stringify(state.wsItem)) return;
  if (open && state.wsItem) ws.send(JSON.stringify({ unsubscribe: state.wsItem }));
  state.wsItem = items;
  if (open && items) ws.send(JSON.stringify({ subscribe: items }));
}

// -- events, banner, toasts ----------------------------------------------------------------------------

function addEvent(kind, text) {
  const list = $("events");
  list.prepend(
    el(
      "li",
      { className: `event ev-${kind}`, dataset: { kind } },
      el("time", { className: "mono muted", text: clockTime() }),
      el("span", { className: "ev-kind", text: kind }),
      el("span", { className: "ev-text", text }),
    ),
  );
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

let bannerTimer = null;

function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => {
    $("banner").hidden = true;
  }, BANNER_MS);
}

function toast(text, kind = "info") {
  const node = el("div", { className: `toast ${kind}`, role: "status", text });
  $("toasts").append(node);
  setTimeout(() => node.remove(), 4000);
}

// -- wiring --------------------------------------------------------------------------------------------

function init() {
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value;
    if (key.trim()) useKey(key);
  });
  $("key-dialog").addEventListener("cancel", (ev) => {
    if (!state.key) ev.preventDefault(); // nothing works without a key
  });
  $("change-key").addEventListener("click", () => askForKey(""));
  $("banner-close").addEventListener("click", () => {
    $("banner").hidden = true;
  });
  let searchTimer = null;
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  });
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 300);
  });
  const tick = () => {
    $("clock").textContent = clockTime();
  };
  tick();
  setInterval(tick, 1000);
  clearChain();
  if (state.key) start();
  else askForKey("");
}

init();
