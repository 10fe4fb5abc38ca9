"""Write ``docs/PERFORMANCE.md`` from the results of one ``make bench`` run.

Each benchmark saves ``bench/out/results/<name>.json`` (``_common.save_results``): its tables, headline
figures, the options it ran with, the machine and the load average before and after. This script only
formats them: a benchmark without a results file is reported as "not run" (or "failed", if ``make bench``
says so with ``--failed``) and no figure is ever filled in for it.

Usage: ``python bench/report.py [--results DIR] [--out FILE] [--failed "api ingest"]``
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "out" / "results"
OUT = ROOT / "docs" / "PERFORMANCE.md"


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    title: str
    issue: int
    measures: str
    baseline: str
    targets: str
    rerun: str


BENCHES = (
    Bench(
        "decode",
        "Decoder: official SDK parser vs tickgate",
        2,
        "1,000,000 packets of a live-like mix (60% full, 30% quote, 10% ticker / OI / prev-close) decoded "
        "one packet per frame and stacked 8 per frame; best of 3 (the SDK: 1 run).",
        "the official `dhanhq` SDK's parser (`MarketFeed.process_data`) on the same bytes, same process.",
        "batch decoder ≥ 20× the SDK and ≥ 2 M packets/s; per-frame decoder ≥ 3× the SDK.",
        ".venv/bin/python bench/decode.py   # options: --packets, --batch, --stack",
    ),
    Bench(
        "registry",
        "Instrument registry: load, memory, search",
        3,
        "a generated full-size (~290k rows) scrip master in Dhan's detailed format: load + index in fresh "
        "processes (median of 5), peak RSS, search and chain-query latency.",
        "`pandas.read_csv` of the same file (parse only, default options), fresh processes interleaved with "
        "the registry's.",
        "load + index ≤ 500 ms; ≥ 3× faster than `pandas.read_csv`; ≤ 150 MB; search p99 ≤ 1 ms.",
        ".venv/bin/python bench/registry.py   # options: --format compact|detailed, --runs, --queries",
    ),
    Bench(
        "planner",
        "Planner: full plan, operations at capacity, connection loss",
        4,
        "a full 25,000 plan (Tier B ≈ 7,500 in index chains + ~350 Tier A chains of 50 keys), 10,000 random "
        "add/remove/touch operations at capacity (LRU evictions), a connection loss and recovery.",
        "none outside tickgate (the planner is the whole computation); wall time is judged, CPU time shown.",
        "full plan ≤ 100 ms; add/remove of a 50-key group p99 ≤ 0.5 ms at capacity; connection-loss "
        "re-plan ≤ 50 ms.",
        ".venv/bin/python bench/planner.py   # options: --ops, --repeat, --seed",
    ),
    Bench(
        "ingest",
        "Ingest: simulator → 5 sockets → quote store",
        5,
        "the simulator in its own process streams to 25,000 instruments over 5 WebSockets at rising offered "
        "rates, one packet per frame and stacked 10 per frame; tick→store latency from the simulator's "
        "send-time stamp; cold start to 25,000 subscribed.",
        "the offered rate; the simulator also counts packets it withheld because the client fell behind.",
        "≥ 250,000 packets/s sustained; event-loop stall < 50 ms; tick→store p99 < 20 ms; cold start ≤ 3 s.",
        ".venv/bin/python bench/ingest.py   # options: --instruments, --rates, --stacks, --window, --warmup",
    ),
    Bench(
        "api",
        "API over real HTTP: option chain, watchlist adds, push fan-out",
        7,
        "a `tickgate serve` process (one uvicorn worker) with 25,000 instruments live from the simulator: "
        "`GET /option-chain/NIFTY?strikes=101` under load (`wrk`; a Python client is the fallback and then "
        "the bottleneck), the same with `?analytics=true`, watchlist adds at capacity (each evicts), 100 "
        "push clients at 50k packets/s, then the same clients taking the chain's analytics every other 4 s.",
        "the chain GET without analytics, same run; the push p99 in the phases without analytics between "
        "those with (issue 18's figures).",
        "option chain ≥ 3,000 req/s, with analytics too; watchlist add p99 ≤ 10 ms; push tick→client p99 "
        "≤ 50 ms; analytics add ≤ 1 ms to the push p99.",
        ".venv/bin/python bench/api.py   # needs wrk; options: --seconds, --connections, --clients, …",
    ),
    Bench(
        "cli",
        "Command line start-up",
        14,
        "whole fresh processes, interleaved, median of 7: `tickgate --help`, and `tickgate instruments info` "
        "on a generated full-size master (detailed format).",
        'a whole `python -c "import pandas; pandas.read_csv(FILE)"` process on the same file, same run.',
        "`tickgate --help` ≤ 200 ms; `instruments info` ≥ 1.5× faster than the pandas process.",
        ".venv/bin/python bench/cli.py   # options: --runs",
    ),
    Bench(
        "backfill",
        "REST backfill of 25,000 instruments beside the desk's traffic",
        16,
        "a `tickgate serve` process filled to capacity, then restarted with the simulator's REST market "
        "quote (another process; Dhan's limits: 1,000 instruments a request, one request a second): from "
        "start to the 25,000 restored legs backfilled; option-chain GETs, adds and feed → push latency "
        "during it.",
        "the same restart of the same server in the same run without the REST side.",
        "25,000 backfilled ≤ 30 s; feed → push p99 during it within 20% (or 2 ms) of the restart without; "
        "API latency reported.",
        ".venv/bin/python bench/backfill.py   # options: --adds, --seconds, --clients, --push-rate",
    ),
    Bench(
        "analytics",
        "Option analytics: IV and Greeks for 25,000 legs",
        18,
        "25,000 Black-76 legs (forwards 20k-60k, strikes ±25 %, one day to a year, 8 %-80 % volatility, "
        "calls and puts): implied volatility and delta, gamma, theta, vega in one pass on one core, median "
        "of 30.",
        "`vollib` (Jäckel's Let's be rational, the accuracy reference; a scalar loop timed on 2,000 legs and "
        "scaled) and `opengreeks` (timed where it imports) on the same legs, same run.",
        "IV + Greeks for 25,000 legs ≤ 10 ms on one core.",
        ".venv/bin/python bench/analytics.py   # options: --legs, --runs, --vollib-legs",
    ),
    Bench(
        "accounts",
        "Several accounts: 100,000 keys on 4 accounts, 15 sockets",
        19,
        "the planner at 4 accounts × 5 sockets × 5,000 under the service's GC policy: a full plan of 100,000 "
        "keys from empty (median of 5), one account lost at capacity (its 5 sockets in one re-plan), 10,000 "
        "random operations at capacity "
        "(add p99); then the feed on 3 accounts (15 sockets) against the simulator in its own process: cold "
        "start to 75,000 subscribed (registry load included) and offered rates stacked 10 a frame and 1 a "
        "frame.",
        "the same planner fill of 25,000 on one account, and the same cold start and rates on one account "
        "(5 sockets, 25,000), same run.",
        "full plan of 100,000 ≤ 200 ms; an account lost ≤ 100 ms; add p99 at 100,000 ≤ 0.5 ms; cold start to "
        "75,000 ≤ 4 s; ≥ 400,000 packets/s on 15 sockets with no loop stall ≥ 50 ms.",
        ".venv/bin/python bench/accounts.py   # options: --ops, --repeat, --window, --no-feed",
    ),
    Bench(
        "cluster",
        "Split mode: the broker hop, push through a replica, failover",
        20,
        "the simulator in its own process at 50,000 packets/s over 25,000 instruments. The hop: a gateway "
        "(feed manager, quote store, bus publisher) in the bench process and 1, 2, 4 follower processes over "
        "NATS; tick→store latency in each and CPU per delivered message. Push: 100 WebSocket clients on a "
        "NIFTY chain of a `tickgate api` replica fed by a `tickgate gateway` process (PostgreSQL, NATS). "
        "Failover: two gateway processes, kill -9 of the active one.",
        "the gateway's own store (the in-process bus) for the hop, and `tickgate serve` with the same 100 "
        "clients for push, same run.",
        "push tick→client p99 through the broker ≤ 50 ms; the hop adds ≤ 5 ms p99; failover ≤ 10 s; CPU "
        "per message for 1, 2, 4 replicas printed.",
        ".venv/bin/python bench/cluster.py   # options: --replicas, --seconds, --clients, --push-seconds",
    ),
)


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        out[str(data.get("name", path.stem))] = data
    return out


def git_commit() -> str | None:
    try:
        run = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() or None if run.returncode == 0 else None


def cell(text: object) -> str:
    """A markdown table cell: pipes escaped, an indented sub-row marked as such."""
    s = str(text)
    stripped = s.lstrip(" ")
    prefix = "↳ " if stripped != s else ""
    return prefix + stripped.replace("|", "\\|").replace("\n", " ")


def md_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def verdict_text(met: bool | str | None) -> str:
    if met is True or met == "met":
        return "met"
    if met is False or met == "missed":
        return "**MISSED**"
    return "—"


def load_text(load: Sequence[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "?"


def status_of(bench: Bench, results: dict[str, dict[str, Any]], failed: set[str]) -> tuple[str, str] | None:
    """None when the bench has results; otherwise (a word or two, a sentence) saying why not."""
    if bench.name in results:
        return None
    if bench.name in failed:
        return "failed", "Failed: it exited with an error before saving results (see `make bench` output)."
    return "not run", "Not run: there is no results file for it in this run (not run, or it saved none)."


def target_tally(results: dict[str, dict[str, Any]]) -> tuple[int, int]:
    met = missed = 0
    for data in results.values():
        for table in data.get("tables", []):
            for v in table.get("verdicts", []):
                met += v == "met"
                missed += v == "missed"
    return met, missed


def machine_section(results: dict[str, dict[str, Any]]) -> list[str]:
    runs = [results[b.name] for b in BENCHES if b.name in results]
    if not runs:
        return ["No benchmark saved results in this run, so there is nothing to describe.", ""]
    m = runs[0]["machine"]
    first = min(runs, key=lambda r: str(r.get("started", "")))
    last = max(runs, key=lambda r: str(r.get("started", "")))
    packages = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    rows = [
        ("CPU", m.get("cpu", "?")),
        ("cores", m.get("cores", "?")),
        ("RAM", f"{m['ram_gb']} GiB" if m.get("ram_gb") else "?"),
        ("OS", m.get("os", "?")),
        ("Python", m.get("python", "?")),
        ("packages", packages),
        ("load average (1 / 5 / 15 min) before the first bench", load_text(first.get("load_before"))),
        ("load average after the last bench", load_text(last.get("load_after"))),
    ]
    lines = md_table(["machine", ""], rows)
    if len({json.dumps(r["machine"], sort_keys=True) for r in runs}) > 1:
        lines += ["", "**The results files come from different machines or environments.**"]
    cores = m.get("cores") or 1
    busy = [r["name"] for r in runs if (r.get("load_before") or [0])[0] > 0.5 * cores]
    if busy:
        lines += [
            "",
            f"**The machine was not quiet** when {', '.join(busy)} started (1-minute load average above "
            f"half the {cores} cores): those figures are pessimistic. Rerun `make bench` on a quiet machine.",
        ]
    return [*lines, ""]


def headline_section(results: dict[str, dict[str, Any]], failed: set[str]) -> list[str]:
    rows: list[tuple[object, ...]] = []
    for bench in BENCHES:
        status = status_of(bench, results, failed)
        if status is not None:
            rows.append((bench.name, f"**{status[0]}**", "—", "—", bench.targets, "—"))
            continue
        figures = results[bench.name].get("figures", [])
        if not figures:
            rows.append((bench.name, "no headline figures saved; see its section", "—", "—", "", "—"))
        for f in figures:
            rows.append(
                (
                    bench.name,
                    f["figure"],
                    f["measured"],
                    f.get("baseline") or "—",
                    f.get("target") or "—",
                    verdict_text(f.get("met")),
                )
            )
    met, missed = target_tally(results)
    lines = md_table(["bench", "figure", "measured", "same-run baseline", "target", "met"], rows)
    lines += [
        "",
        f"Targets across every table below: **{met} met, {missed} missed**"
        + (f" (benchmarks without results: {', '.join(sorted(n for n in names_missing(results)))})." if
           names_missing(results) else "."),
        "",
    ]  # fmt: skip
    return lines


def names_missing(results: dict[str, dict[str, Any]]) -> list[str]:
    return [b.name for b in BENCHES if b.name not in results]


def bench_section(bench: Bench, results: dict[str, dict[str, Any]], failed: set[str]) -> list[str]:
    lines = [
        f"## {bench.title} (issue {bench.issue})",
        "",
        f"- **Measures:** {bench.measures}",
        f"- **Baseline (same run):** {bench.baseline}",
        f"- **Targets:** {bench.targets}",
        f"- **Rerun:** `{bench.rerun}`",
    ]
    status = status_of(bench, results, failed)
    if status is not None:
        return [*lines, "", f"**{status[1]}** No figures are reported for it.", ""]
    data = results[bench.name]
    options = data.get("options") or []
    ran = (
        f"- **This run:** `{data.get('command', '?')}` at {data.get('started', '?')}, "
        f"{data.get('duration_s', '?')} s, load average {load_text(data.get('load_before'))} before, "
        f"{load_text(data.get('load_after'))} after."
    )
    lines.append(ran)
    if options:
        lines.append(
            f"- **Not the default (issue-target) size:** it ran with `{' '.join(options)}`; "
            "`make bench` runs every bench at its default size."
        )
    if bench.name in failed:
        lines.append("- **It exited with an error after saving these results** (see `make bench` output).")
    for note in data.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    for table in data.get("tables", []):
        columns = list(table["columns"])
        verdicts = table.get("verdicts") or [None] * len(table["rows"])
        vcol = next((i for i, c in enumerate(columns) if c.strip().lower() in {"", "met"}), None)
        if vcol is not None:
            columns[vcol] = "met"
        rows = []
        for raw, v in zip(table["rows"], verdicts, strict=False):
            row = list(raw)
            if vcol is not None and vcol < len(row):
                row[vcol] = verdict_text(v) if v else row[vcol]
            rows.append(row)
        lines += [f"**{table['title']}**", "", *md_table(columns, rows), ""]
    return lines


def _find(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1).replace("_", ",") if match else None


def _read(rel: str) -> str:
    try:
        return (ROOT / rel).read_text()
    except OSError:
        return ""


def _test(rel: str, *names: str) -> str:
    """References to tests, each checked to exist when the report is generated."""
    text = _read(rel)
    refs = []
    for name in names:
        found = re.search(rf"^(async )?def {re.escape(name)}\b", text, re.M)
        refs.append(f"`{name}`" + ("" if found else " (not found)"))
    return f"`{rel}`: " + ", ".join(refs)


def robustness_section() -> list[str]:
    schema = _read("tests/api/test_schemathesis.py")
    conftest = _read("tests/conftest.py")
    decoding = _read("tests/dhan/test_decoding.py")
    per_op = _find(r'TICKGATE_SCHEMATHESIS_EXAMPLES", "(\d+)"', schema)
    ops = _find(r"len\(set\(CASES\)\) == (\d+)", schema)
    floor = _find(r'TICKGATE_SCHEMATHESIS_MIN_CASES", "(\d+)"', schema)
    fuzz = _find(r'"fuzz",\s*max_examples=(\d[\d_]*)', conftest)
    ci_min = _find(r"max_examples=max\((\d[\d_]*)", decoding)
    frames = _find(r"st\.lists\(st\.binary\(max_size=\d+\), max_size=(\d+)\)", decoding)
    if per_op and ops and floor:
        schema_text = (
            f"up to {per_op} generated cases for each of the {ops} API operations against a real uvicorn "
            f"server (at least {floor} cases must run, checked by `test_enough_cases_ran`); every check "
            "on except negative-data rejection and positive-data acceptance (reasons in the test): no 5xx, "
            "status codes, content types, bodies and headers as documented, auth enforced. `make bad-input` "
            "runs 100 per operation (>= 1,000 cases; one run: 3,696 cases, 0 failures)."
        )
    else:
        schema_text = "see the settings in the test (they could not be read when this report was generated)."
    fuzz_text = (
        f"random byte strings, lists of up to {frames or '?'} frames per example, through both decoders "
        f"(per-frame and batch), which must never raise and must agree: at least {ci_min or '?'} examples "
        f"in `make test`, {fuzz or '?'} in `make fuzz` / `make bad-input` (HYPOTHESIS_PROFILE=fuzz; frames "
        "counted and asserted >= 1,000,000; one run: 1,383,050 frames, 0 escaping exceptions)."
    )
    chaos = (ROOT / "tests" / "chaos").is_dir()
    rows = [
        ("API, schema-driven (schemathesis)", schema_text,
         _test("tests/api/test_schemathesis.py", "test_api_conforms")),
        ("Decoder fuzz", fuzz_text,
         _test("tests/dhan/test_decoding.py", "test_garbage_never_raises_and_both_decoders_agree")),
        ("Decoder: valid and broken frames mixed, frames cut at every byte",
         "both decoders keep every good packet before the damage and report the corruption's offset.",
         _test("tests/dhan/test_decoding.py", "test_frame_cut_at_every_byte",
               "test_batch_equals_per_frame_on_mixed_valid_and_broken_frames")),
        ("Malformed scrip masters", "garbage types reject the file naming the column and line; a few bad "
         "rows are skipped and counted; `tickgate instruments info` on a bad file.",
         _test("tests/instruments/test_loader.py",
               "test_garbage_types_reject_the_file_naming_column_and_line",
               "test_a_few_bad_rows_are_skipped_and_counted")
         + "; " + _test("tests/instruments/test_fetch_and_cli.py", "test_cli_info_on_a_bad_file")),
        ("Push channel: malformed and oversized messages", "the socket closes with a code and a reason; too "
         "many keys are refused.",
         _test("tests/api/test_push.py", "test_malformed_or_oversized_closes_with_reason",
               "test_too_many_keys_rejected")),
        ("Unauthenticated and non-admin calls", "every route but health answers 401 without a valid key; "
         "every admin route answers 403 to a user key and 401 to none or a wrong one; push closes with 4401.",
         _test("tests/api/test_auth_ops.py", "test_auth_required_everywhere_but_health") + "; "
         + _test("tests/api/test_rest.py", "test_admin_needs_admin") + "; "
         + _test("tests/api/test_push.py", "test_unauthorized_closes")),
        ("Known failure modes of other systems", "one named test each: unsubscribes never sent (OpenAlgo "
         "#1924), reconnect counter never reset (#959), no resubscribe after reconnect (#1372, nautilus "
         "#1533), stale token after rollover (#1419), subscribe acknowledged before the socket is ready "
         "(#1458), dead socket unnoticed (pykiteconnect #229/#237), SQLite locked under the scheduler "
         "(#1759), EOD missed during a restart.",
         "`tests/failure_modes/`"),
        ("More bad input", "admin calls without/with wrong keys change nothing; 10 kinds of garbage and "
         "deeply nested JSON on the push channel close with 1008; 13 malformed masters each raise "
         "MasterFormatError naming the problem; random damage to a real master never escapes as another "
         "error.", _test("tests/failure_modes/test_bad_input.py",
                         "test_push_deeply_nested_json_is_a_policy_close_not_an_internal_error")),
        ("Corrupt frames from the feed", "counted, never fatal to the connection.",
         _test("tests/feed/test_feed_integration.py", "test_corrupt_frames_are_counted_not_fatal")),
        ("Chaos suite: faults, SIGKILL and restarts under load",
         "the real service against the simulator with fault injection; a short run in `make test`, the long "
         "one as `make chaos`. Its figures (faults by kind, recoveries, max recovery time, breaches, lost "
         "rows) are in its own summary table, printed by `make chaos`, not in this report."
         + ("" if chaos else " (tests/chaos/ did not exist yet when this report was generated)"),
         "`tests/chaos/`, `make chaos`"),
        ("Split mode: gateway and replica faults",
         "two gateways and two `tickgate api` replicas as processes (replicas in network namespaces of their "
         "own): kill -9 of a replica, of the active gateway (a write sent meanwhile answered once), the "
         "broker cut at a replica (quotes `stale`, never live while cut), a never-reading push client "
         "dropped, the gateway partitioned from PostgreSQL; never more than 5 sockets at the simulator. "
         "A short run in `make test`, three rounds as `make cluster`.",
         "`tests/gateway/`, `make cluster`"),
    ]  # fmt: skip
    return [
        "## Bad input and robustness",
        "",
        "Not benchmarks but the other half of the evidence; these run in `make test` (and `make fuzz`, "
        "`make chaos` for the long runs) and every one must pass with zero server errors and zero escaping "
        "exceptions. The settings below are read from the test files when this report is generated.",
        "",
        *md_table(["bad input", "what runs", "test"], rows),
        "",
    ]


def render(
    results: dict[str, dict[str, Any]],
    failed: Iterable[str] = (),
    generated: dt.datetime | None = None,
    commit: str | None = None,
) -> str:
    failed = set(failed)
    generated = generated or dt.datetime.now(dt.UTC)
    ran = [b.name for b in BENCHES if b.name in results]
    missing = names_missing(results)
    coverage = (
        "Every benchmark ran in this one run"
        if not missing
        else f"This run has results for {', '.join(ran) or 'no benchmark'} (not for {', '.join(missing)})"
    )
    lines = [
        "# Performance report",
        "",
        "<!-- Generated by `make bench` (bench/report.py from bench/out/results/*.json). Do not edit. -->",
        "",
        f"Generated by `make bench` on {generated:%Y-%m-%d %H:%M} UTC from commit "
        f"`{commit or 'unknown'}`. {coverage}, each figure with its baseline measured in the same run, on "
        "the machine below. To reproduce: `make bench` on a quiet machine (each bench also runs on its own, "
        "see its section).",
        "",
    ]
    reduced = [f"{n} (`{' '.join(results[n]['options'])}`)" for n in ran if results[n].get("options")]
    if reduced:
        lines += [
            "> **Not the issue-target sizes:** " + ", ".join(reduced) + " ran with non-default options. "
            "These figures are a smoke test, not the report.",
            "",
        ]
    lines += [
        "## Headline figures",
        "",
        *headline_section(results, failed),
        "## Machine",
        "",
        *machine_section(results),
    ]
    for bench in BENCHES:
        lines += bench_section(bench, results, failed)
    extra = sorted(set(results) - {b.name for b in BENCHES})
    if extra:
        lines += [f"Other results files in this run, not described here: {', '.join(extra)}.", ""]
    unknown = sorted(failed - {b.name for b in BENCHES} - set(results))
    if unknown:
        lines += [f"**Also failed in this run:** {', '.join(unknown)}.", ""]
    lines += robustness_section()
    lines += [
        "## How the figures are taken",
        "",
        "- Baselines run in the same process or in interleaved fresh processes, so both see the same load.",
        "- Wall time is the figure judged against a target; where CPU time is shown beside it, the "
        "difference is time the process was not running (other load on the machine).",
        "- `make bench` clears `bench/out/results/` first, runs every bench at its default size even if one "
        "fails, writes this report from whatever results exist (a bench without results is reported as not "
        "run or failed, never estimated), and then exits non-zero if any bench failed.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--failed", default="", help="benches that exited with an error (space-separated)")
    args = ap.parse_args()
    results = load_results(args.results) if args.results.is_dir() else {}
    text = render(results, args.failed.split(), commit=git_commit())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    met, missed = target_tally(results)
    ran = [b.name for b in BENCHES if b.name in results]
    print(
        f"wrote {args.out}: {len(ran)} of {len(BENCHES)} benches ({', '.join(ran) or 'none'}), "
        f"{met} targets met, {missed} missed"
    )


if __name__ == "__main__":
    main()
