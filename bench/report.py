"""bench/results.json -> bench/RESULTS.md, with the goals of issue 5 checked run by run.

python -m bench.report      # render again without running anything
"""

# ruff: noqa: RUF001  (the multiplication sign and the en dash are meant: they go into Markdown)

import json
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_JSON = BENCH_DIR / "results.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
WRITES_JSON = BENCH_DIR / "writes-results.json"  # bench.writes

ROUTES = {
    "get_case": "GET /cases/{id}",
    "list_first": "GET /cases (first page)",
    "list_deep": "GET /cases (deep cursor page)",
    "items": "GET /cases/{id}/seized-items",
    "events": "GET /events",
    "post_item": "POST /cases/{id}/seized-items",
}
# caseapi ÷ the yardstick of the route: the anchor where it serves the route, else the reference.
GOAL_RATIO = {
    "get_case": 0.5,
    "list_first": 0.5,
    "list_deep": 0.5,
    "items": 0.5,
    "events": 0.5,
    "post_item": 0.4,
}

INTRO = """# Benchmark results

Written by `python -m bench.run` and `python -m bench.writes` (see bench/README.md). caseapi,
the reference (bench/reference.py: the fastest hand-written service of the same routes, on
asyncpg and orjson, checked to answer as caseapi) and, where it serves the route, the anchor (a
hand-written yardstick kept outside the repository, given with `--anchor`) are measured in the
same run with interleaved rounds. Each route's yardstick is the anchor where it serves it, else
the reference; the ratios are what to compare, as the machine is shared with other
developers' test suites (see the load averages). req/s, p50 and p99 are medians over the
rounds; RSS is the worker's largest resident set seen. req/s ratios: higher is better.
"""


def save(key: str, run_result: dict[str, Any]) -> dict[str, Any]:
    """Keep every run in results.json, keyed by backend and size, and render RESULTS.md."""
    runs: dict[str, Any] = {}
    if RESULTS_JSON.exists():
        runs = json.loads(RESULTS_JSON.read_text()).get("runs", {})
    runs[key] = run_result
    doc = {"runs": dict(sorted(runs.items()))}
    RESULTS_JSON.write_text(json.dumps(doc, indent=1) + "\n")
    RESULTS_MD.write_text(render(doc))
    return doc


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _ratio_goals(routes: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for route, need in GOAL_RATIO.items():
        if route in routes:
            got = routes[route]["ratio"]["rps"]
            ok = got >= need if got is not None else None
            yardstick = routes[route].get("yardstick", "reference")
            rows.append((f"{ROUTES[route]} ≥ {need}× {yardstick} req/s", _f(got, 2), _mark(ok)))
    for route, res in routes.items():
        a = res["caseapi"]
        stalled = a.get("stalled_rounds") or (a["requests"] == 0 and len(res["rounds"]["caseapi"]))
        ok = bool(a["p50_ms"]) and a["p99_ms"] <= 3 * a["p50_ms"] and a["timeouts"] == 0 and not stalled
        measured = f"{_f(a['p99_ms'])} / {_f(a['p50_ms'])} ms, {a['timeouts']} timeouts"
        if stalled:
            measured += f", {stalled} round(s) in which no request completed"
        rows.append((f"{ROUTES[route]}: p99 ≤ 3× p50, no timeouts at 32", measured, _mark(ok)))
    return rows


def _bundle_goal(b: dict[str, Any]) -> tuple[str, str, str]:
    goal = "10 000-item bundle import ≥ 20× faster than 10 000 single POSTs"
    speedup = b.get("speedup_caseapi")
    if speedup is not None:
        imp, single = b["import_caseapi"]["seconds"], b["singles_caseapi"]["extrapolated_seconds_for_all"]
        return goal, f"{_f(speedup)}× ({imp} s against {single} s)", _mark(speedup >= 20)
    status = b.get("import_caseapi", {}).get("status")
    return (
        goal,
        b.get("note") or f"POST /bundles answered {status}",
        _mark(None if not b["available"] else False),
    )


def goals(r: dict[str, Any], runs: dict[str, Any]) -> list[tuple[str, str, str]]:
    routes = r.get("routes", {})
    rows = _ratio_goals(routes)
    if "many" in r:
        detail = "; ".join(f"{k}: {v['codes']}, max {_f(v['max_ms'])} ms" for k, v in r["many"].items())
        ok = all(x["pass"] for x in r["many"].values())
        rows.append(
            ("256 connections: bounded latency or 503 (and some answers), never a hang", detail, _mark(ok))
        )
    if r.get("bundle"):
        rows.append(_bundle_goal(r["bundle"]))
    if w := r.get("walk"):
        ok = w["rss_after_mb"] < 150 and w["complete"]
        measured = f"{_f(w['rss_after_mb'])} MB after {w['pages']:,} pages"
        rows.append(
            (f"one worker's RSS < 150 MB after walking every page ({r['size']})", measured, _mark(ok))
        )
    small = runs.get(f"{r['backend']}-small", {}).get("routes", {})
    if r["size"] == "large" and small:
        for route in ("list_first", "list_deep"):
            if route in routes and route in small:
                big, little = routes[route]["caseapi"]["p99_ms"], small[route]["caseapi"]["p99_ms"]
                rows.append(
                    (f"{ROUTES[route]}: p99 at 1 M ≤ 1.5× p99 at 1 k", f"{_f(big)} vs {_f(little)} ms",
                     _mark(big <= 1.5 * little))
                )  # fmt: skip
    if "workers2" in r:
        st = r["workers2"].get("stateless", {})
        shown = json.dumps({k: v for k, v in st.items() if k != "statuses"})
        rows.append(
            (
                "`caseapi serve --workers 2` stateless (cursors, idempotent replays)",
                shown,
                _mark(st.get("pass")),
            )
        )
    return rows


def _header(r: dict[str, Any]) -> list[str]:
    m, s, d = r["machine"], r["settings"], r["dataset"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    counts = ", ".join(f"{k} {v:,}" for k, v in d["counts"].items())
    return [
        f"## {r['backend']}, {r['size']} ({d['cases']:,} cases)",
        "",
        f"Run {r['started_at']} – {r.get('finished_at', '(in progress)')}, commit {m.get('git_commit')}; "
        f"{m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB; Python {m['python']}; load: {m['load_tool']}; "
        f"load average at start {m['loadavg_start']}, at end {r.get('loadavg_end')}.",
        f"Versions: {versions}.",
        *(
            [f"The servers ran the working tree: app files changed but not committed: {', '.join(dirty)}."]
            if (dirty := m.get("app_changes_not_committed"))
            else []
        ),
        f"Dataset: {counts}; generated in {d.get('seconds')} s.",
        f"Load: {s['connections']} connections, warm-up {s['warmup']} s discarded, {s['rounds']} interleaved "
        f"rounds of {s['duration']} s per server.",
        "",
    ]


def _routes_table(r: dict[str, Any]) -> list[str]:
    out = [
        "| route | caseapi req/s | reference req/s | anchor req/s | caseapi ÷ yardstick "
        "| reference ÷ yardstick | caseapi ÷ reference | caseapi p50 / p99 ms | reference p50 / p99 ms "
        "| anchor p50 / p99 ms "
        "| caseapi p99 ÷ p50 | timeouts | errors | caseapi / reference RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in r.get("routes", {}).values():
        a, b, n = res["caseapi"], res["reference"], res.get("anchor")
        for x in (a, b, n):
            if x and not x["requests"]:  # no request completed in any round: no latency, not zero latency
                x["p50_ms"] = x["p99_ms"] = None
        vs = res.get("vs_yardstick", {})
        yardstick = res.get("yardstick", "reference")
        spread = _f(a["p99_ms"] / a["p50_ms"], 1) if a["p50_ms"] and a["p99_ms"] else "–"
        anchor = (_f(n["rps"]), f"{_f(n['p50_ms'])} / {_f(n['p99_ms'])}") if n else ("–", "–")
        out.append(
            f"| {res['route']} | {_f(a['rps'])} | {_f(b['rps'])} | {anchor[0]} "
            f"| **{_f(res['ratio']['rps'], 2)}** ({yardstick}) | {_f(vs.get('reference'), 2)} "
            f"| {_f(res.get('ratio_reference', res['ratio'])['rps'], 2)} "
            f"| {_f(a['p50_ms'])} / {_f(a['p99_ms'])} | {_f(b['p50_ms'])} / {_f(b['p99_ms'])} | {anchor[1]} "
            f"| {spread} | {a['timeouts']} / {b['timeouts']} | {a['errors']} / {b['errors']} "
            f"| {_f(a['rss_mb'])} / {_f(b['rss_mb'])} |"
        )
    return out


def _parity(p: dict[str, Any]) -> list[str]:
    checks = p["checks"]
    if p["pass"]:
        return [
            "",
            f"Parity: the reference answered as caseapi on all {len(checks)} checks ({', '.join(checks)}).",
        ]
    failed = {k: v for k, v in checks.items() if not v["same"]}
    return ["", f"Parity: **the reference did not answer as caseapi**: {json.dumps(failed)}."]


def _workers2(w2: dict[str, Any]) -> list[str]:
    out = [
        "",
        "`caseapi serve --workers 2` against the same reference (1 worker):",
        "",
        "| route | caseapi ×2 req/s | ref req/s | ratio | caseapi p50 / p99 ms | RSS per worker MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for res in w2["routes"].values():
        a, b = res["caseapi"], res["reference"]
        out.append(
            f"| {res['route']} | {_f(a['rps'])} | {_f(b['rps'])} | **{_f(res['ratio']['rps'], 2)}** "
            f"| {_f(a['p50_ms'])} / {_f(a['p99_ms'])} | {_f(a['rss_mb'])} |"
        )
    return out


def _many(many: dict[str, Any]) -> list[str]:
    out = [
        "",
        "256 connections (caseapi, 1 worker):",
        "",
        "| route | requests | req/s | p50 / p99 / max ms | timeouts | status codes | normal again after |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for route, v in many.items():
        out.append(
            f"| {ROUTES[route]} | {v['requests']} | {_f(v['rps'])} "
            f"| {_f(v['p50_ms'])} / {_f(v['p99_ms'])} / {_f(v['max_ms'])} | {v['timeouts']} | {v['codes']} "
            f"| {v.get('drain_seconds')} s |"
        )
    return out


def _bundle(b: dict[str, Any]) -> list[str]:
    out = ["", "Bundle import (a 10 000-item case) against 10 000 single POSTs, 32 connections:", ""]
    e = b.get("export")
    if e:
        out.append(
            f"- export GET /cases/{{id}}/bundle: {e['status']}, {e['seconds']} s, {e['bytes']:,} bytes "
            f"({b.get('items')} items, {b.get('custody_events')} custody events)"
        )
    for name in ("caseapi", "reference"):
        imp, s = b.get(f"import_{name}"), b.get(f"singles_{name}")
        if imp:
            detail = f" ({imp['detail']})" if imp.get("detail") else ""
            out.append(f"- {name}: POST /bundles {imp['status']} in {imp['seconds']} s{detail}")
        if s:
            out.append(
                f"- {name}: {s['ok']:,} single POSTs in {s['seconds']} s ({_f(s['rps'])} req/s; all 10 000 "
                f"≈ {s['extrapolated_seconds_for_all']} s); the bundle is "
                f"{_f(b.get(f'speedup_{name}'))}× faster"
            )
    if b.get("note"):
        out.append(f"- {b['note']}")
    return out


def _walk(w: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Walk over every page of GET /cases (limit 200): {w['pages']:,} pages, {w['items']:,} cases, "
        f"{w['duplicates']} duplicates, complete: {w['complete']}, {w['seconds']} s, page p50 "
        f"{w['page_p50_ms']} ms, p99 {w['page_p99_ms']} ms; worker RSS {w['rss_before_mb']} MB before, "
        f"{w['rss_after_mb']} MB after.",
    ]


def writes_table(w: dict[str, Any]) -> list[str]:
    """The last run of bench.writes: POSTs per second under the journal lock."""
    out = [
        f"Write scaling (`python -m bench.writes`, {w['size']}, run {w['started_at']}, load average "
        f"{w['loadavg_start']} at start; {w['settings']['rounds']} interleaved rounds of "
        f"{w['settings']['duration']} s, {w['settings']['connections']} connections):",
        "",
        "| POST /cases/{id}/seized-items | caseapi writes/s | reference writes/s | caseapi ÷ reference "
        "| caseapi p50 / p99 ms | reference p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, r in w["http"].items():
        a, b = r["caseapi"], r["reference"]
        out.append(
            f"| {key.replace('workers', '')} worker(s) each | {_f(a['rps'])} | {_f(b['rps'])} "
            f"| **{_f(r['ratio']['rps'], 2)}** | {_f(a['p50_ms'])} / {_f(a['p99_ms'])} "
            f"| {_f(b['p50_ms'])} / {_f(b['p99_ms'])} |"
        )
    p = w["in_process"]
    out += [
        "",
        f"The reference's write transaction without HTTP, {p['tasks']} tasks: "
        f"{_f(p['writes_per_s'])} writes/s; "
        f"the journal lock held {_f(p['lock_held_p50_ms'], 2)} ms (p50), {_f(p['lock_held_p99_ms'], 2)} ms "
        f"(p99) per write: a ceiling of about {_f(p['ceiling_per_s'], 0)} writes/s for the whole database. "
        f"`caseapi audit verify` after the run: "
        f"{w['audit_verify']['output'] or w['audit_verify']['returncode']}",
    ]
    return out


def render(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    out = [INTRO]
    for r in runs.values():
        out += _header(r) + _routes_table(r)
        if "parity" in r:
            out += _parity(r["parity"])
        if "workers2" in r:
            out += _workers2(r["workers2"])
        if "many" in r:
            out += _many(r["many"])
        if r.get("bundle"):
            out += _bundle(r["bundle"])
        if r.get("walk"):
            out += _walk(r["walk"])
        rows = goals(r, runs)
        if rows:
            out += [
                "",
                "Goals of issue 13, performance (the ratio goals count on PostgreSQL):",
                "",
                "| goal | measured | |",
            ]
            out += ["|---|---|---|"] + [f"| {g} | {d} | {s} |" for g, d, s in rows]
        out += [f"\nNote: {note}" for note in r.get("notes", [])]
        out.append("")
    if WRITES_JSON.exists():
        out += ["## Write scaling", "", *writes_table(json.loads(WRITES_JSON.read_text())[-1]), ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    RESULTS_MD.write_text(render(json.loads(RESULTS_JSON.read_text())))
    print(RESULTS_MD.read_text())
