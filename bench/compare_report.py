#!/usr/bin/env python3
"""Turns a bench/compare.sh work directory into the dated results files.

Usage: compare_report.py WORK_DIR OUT_PREFIX   (writes OUT_PREFIX.md and .json)

Reads WORK_DIR/meta.txt (key=value facts), WORK_DIR/index.tsv (one line per
run) and each run's directory: result.json (corekv-bench --json),
bench.txt (etcd benchmark output), gen.time (/usr/bin/time of the
generator), server.usage (cross-check server CPU ticks and VmHWM), load.
Cluster runs (compare.sh --members 3) also have cluster.usage (every
member's CPU ticks around the generator command and VmHWM after it, summed
here) and leader (the member that led when the run started).
Medians are taken per metric over rounds; ratios are corekv / etcd.
"""

import json
import re
import statistics
import sys
from pathlib import Path

# Issue 6's targets: (workload, metric, bound, direction, text).
TARGETS = [
    ("put-1000c", "qps", 5.0, ">=", "put QPS at 1000 clients >= 5x etcd"),
    ("put-1c", "p99_ms", 1 / 3, "<=", "put p99 at 1 client <= 1/3 of etcd"),
    ("range-s-1000c", "qps", 5.0, ">=", "serializable range QPS >= 5x"),
    ("range-l-1000c", "qps", 5.0, ">=", "linearizable range QPS >= 5x"),
    ("range-s-100c", "qps", 5.0, ">=", "serializable range QPS >= 5x"),
    ("range-l-100c", "qps", 5.0, ">=", "linearizable range QPS >= 5x"),
]
CPU_TARGET = 0.2  # server CPU per request <= 1/5 of etcd's
RSS_TARGET = 1 / 3  # peak RSS <= 1/3 of etcd's

DESCRIPTIONS = {
    "put-1c": "Put, 1 connection, 1 client",
    "put-1000c": "Put, 100 connections, 1000 clients",
    "range-s-1000c": "serializable Range of one key, 100 conns, 1000 clients",
    "range-l-1000c": "linearizable Range of one key, 100 conns, 1000 clients",
    "range-s-100c": "serializable Range of one key, 10 conns, 100 clients",
    "range-l-100c": "linearizable Range of one key, 10 conns, 100 clients",
    "txn-put-1000c": "k8s create Txn, 100 conns, 1000 clients",
    "txn-cas-1000c": "k8s update Txn, 100 conns, 1000 clients",
    "watch-10kw": "10,000 prefix watchers (100 streams x 100) over 1,000 prefixes, 10 conns; 100 writers put 1,000/s",
    "watch-fanout-1kw": "1,000 watchers (10 streams x 100) of one prefix, 10 conns; 10 writers put 100/s under it",
    "lease-keepalive-100c": "LeaseKeepAlive, 100 streams on 10 conns, 1,000 leases, next request as soon as answered",
    "put-paced": "Put at 1,000/s, 100 clients, 10 conns (baseline for put-paced-slow-1000w)",
    "put-paced-slow-1000w": "put-paced while 1,000 watchers of every key (10 streams, 10 own conns) never read",
}
# Issue 5's watch delivery workloads.
WATCH_WORKLOADS = ("watch-10kw", "watch-fanout-1kw")
# Issue 5's pair: put latency without and with non-reading watchers.
SLOW_PAIR = ("put-paced", "put-paced-slow-1000w")


def read_meta(work):
    meta = {}
    for line in (work / "meta.txt").read_text().splitlines():
        key, _, value = line.partition("=")
        meta[key] = value
    return meta


def read_time(path):
    """/usr/bin/time -f '%U %S %M [%e]': user+sys seconds, max RSS KiB."""
    fields = path.read_text().split()
    return {"cpu_s": float(fields[0]) + float(fields[1]), "max_rss_kib": int(fields[2])}


def read_cluster_usage(path):
    """compare.sh's cluster.usage: clk_tck, window_s, then per member
    "name pid cpu_ticks vmhwm_kib"."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    hz, window = int(lines[0][1]), float(lines[1][1])
    members = [{"member": f[0], "cpu_s": int(f[2]) / hz, "peak_rss_mib": int(f[3]) / 1024} for f in lines[2:]]
    return window, members


def cluster_server_figures(run_dir, requests):
    """Server CPU and RSS of a cluster run: sums over the members.

    CPU is utime+stime of every member from just before to just after the
    generator command (connect included; range preloads ran before it);
    RSS is the sum of the members' VmHWM at the end."""
    window, members = read_cluster_usage(run_dir / "cluster.usage")
    cpu_s = sum(m["cpu_s"] for m in members)
    return {
        "server_cpu_s_per_1000": cpu_s * 1000 / requests if requests else None,
        "server_cores_busy": cpu_s / window if window else None,
        "peak_rss_mib": sum(m["peak_rss_mib"] for m in members),
        "server_cpu_window_s": window,
        "member_usage": members,
        "leader": (run_dir / "leader").read_text().strip(),
    }


def main_run(server, workload, round_, run_dir):
    r = json.loads((run_dir / "result.json").read_text())
    res, lat, srv, gen = r["result"], r["result"]["latency_us"], r["server"] or {}, r["generator"]
    requests = res["ok"] + res["failed"]
    whole = read_time(run_dir / "gen.time")
    cluster = cluster_server_figures(run_dir, requests) if (run_dir / "cluster.usage").exists() else {}
    return {
        "server": server,
        "workload": workload,
        "round": int(round_),
        "qps": res["qps"],
        "p50_ms": lat["p50"] / 1e3,
        "p90_ms": lat["p90"] / 1e3,
        "p99_ms": lat["p99"] / 1e3,
        "p99_9_ms": lat["p99_9"] / 1e3,
        "max_ms": lat["max"] / 1e3,
        "ok": res["ok"],
        "errors": res["failed"],
        "errors_by_code": res["errors_by_code"],
        "elapsed_s": res["elapsed_s"],
        "server_cpu_s_per_1000": srv.get("cpu_s_per_1000_requests"),
        "server_cores_busy": srv.get("cpu_s", 0) / res["elapsed_s"] if res["elapsed_s"] else None,
        "peak_rss_mib": srv["peak_rss_kib"] / 1024 if srv.get("peak_rss_kib") else None,
        "generator_us_per_request": gen["cpu_us_per_request"],
        "generator_cores_busy": gen["cores_busy"],
        "generator_whole_process_us_per_request": whole["cpu_s"] * 1e6 / requests if requests else None,
        "load_average": r["machine"]["load_average"],
        "preload_failed": r["preload"]["failed"],
        "command": r["command"],
        **stream_metrics(r),
        **cluster,
    }


def stream_metrics(r):
    """Watch delivery, and the server's RSS per stream, watcher and lease."""
    srv, out = r["server"] or {}, {}
    rss = srv.get("rss_kib") or {}
    for key in ("connected", "streams_open", "set_up", "end"):
        out[f"rss_{key}_mib"] = rss[key] / 1024 if rss.get(key) is not None else None
    out["rss_kib_per_stream"] = srv.get("rss_kib_per_stream")
    out["rss_kib_per_watcher"] = srv.get("rss_kib_per_watcher")
    out["rss_kib_per_lease"] = srv.get("rss_kib_per_lease")
    setup = r.get("setup") or {}
    out["setup_streams"], out["setup_watchers"] = setup.get("streams"), setup.get("watchers")
    out["setup_create_s"] = setup.get("create_seconds")
    w = r.get("watch")
    if w:
        ack, sent = w["latency_from_ack_us"], w["latency_from_sent_us"]
        out.update({
            "event_p50_ms": ack["p50"] / 1e3,
            "event_p90_ms": ack["p90"] / 1e3,
            "event_p99_ms": ack["p99"] / 1e3,
            "event_p99_9_ms": ack["p99_9"] / 1e3,
            "event_max_ms": ack["max"] / 1e3,
            "event_sent_p50_ms": sent["p50"] / 1e3,
            "event_sent_p99_ms": sent["p99"] / 1e3,
            "events_per_s": w["events_per_second"],
            "events_expected": w["expected"],
            "events_delivered": w["delivered"],
            "watch_errors": w["errors"]["total"],
            "watch_first_error": w["errors"]["first_error"],
            "events_before_ack_share": w["before_ack"] / w["delivered"] if w["delivered"] else None,
        })
    return out

def parse_etcd_benchmark(text):
    """The summary of etcd's benchmark tool: Requests/sec and percentiles."""
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["qps"] = float(m.group(1)) if m else None
    m = re.search(r"Total:\s+([\d.]+) secs", text)
    out["elapsed_s"] = float(m.group(1)) if m else None
    for pct, key in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms"), ("99.9", "p99_9_ms")):
        m = re.search(r"^\s*" + re.escape(pct) + r"% in ([\d.]+) secs", text, re.M)
        out[key] = float(m.group(1)) * 1e3 if m else None
    m = re.search(r"Slowest:\s+([\d.]+) secs", text)
    out["max_ms"] = float(m.group(1)) * 1e3 if m else None
    errors = 0
    if "Error distribution:" in text:
        for m in re.finditer(r"^\s*\[(\d+)\]\s", text.split("Error distribution:", 1)[1], re.M):
            errors += int(m.group(1))
    out["errors"] = errors
    return out


def xcheck_run(tool, server, kind, round_, run_dir):
    whole = read_time(run_dir / "gen.time")
    ticks, hz, hwm = (run_dir / "server.usage").read_text().split()
    server_cpu = int(ticks) / int(hz)
    if tool == "corekv-bench":
        r = json.loads((run_dir / "result.json").read_text())
        res, lat = r["result"], r["result"]["latency_us"]
        figures = {
            "qps": res["qps"],
            "elapsed_s": res["elapsed_s"],
            "p50_ms": lat["p50"] / 1e3,
            "p90_ms": lat["p90"] / 1e3,
            "p99_ms": lat["p99"] / 1e3,
            "p99_9_ms": lat["p99_9"] / 1e3,
            "max_ms": lat["max"] / 1e3,
            "errors": res["failed"],
        }
        requests = res["ok"] + res["failed"]
    else:
        figures = parse_etcd_benchmark((run_dir / "bench.txt").read_text())
        requests = round(figures["qps"] * figures["elapsed_s"]) if figures["qps"] and figures["elapsed_s"] else 0
    figures.update(
        {
            "tool": tool,
            "server": server,
            "workload": kind,
            "round": int(round_),
            "requests": requests,
            "generator_whole_process_us_per_request": whole["cpu_s"] * 1e6 / requests if requests else None,
            "generator_max_rss_mib": whole["max_rss_kib"] / 1024,
            "server_cpu_s_per_1000": server_cpu * 1000 / requests if requests else None,
            "peak_rss_mib": int(hwm) / 1024,
            "load_average": (run_dir / "load").read_text().strip(),
            "command": (run_dir / "bench.cmd").read_text().strip(),
        }
    )
    return figures


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


METRICS = [
    "qps", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "server_cpu_s_per_1000", "server_cores_busy",
    "peak_rss_mib", "generator_us_per_request", "generator_whole_process_us_per_request", "generator_cores_busy",
    "errors",
    # streams (issue 5)
    "rss_connected_mib", "rss_streams_open_mib", "rss_set_up_mib", "rss_end_mib", "rss_kib_per_stream",
    "rss_kib_per_watcher", "rss_kib_per_lease", "setup_create_s", "event_p50_ms", "event_p90_ms", "event_p99_ms",
    "event_p99_9_ms", "event_max_ms", "event_sent_p50_ms", "event_sent_p99_ms", "events_per_s", "events_expected",
    "events_delivered", "watch_errors", "events_before_ack_share",
]
RATIO_METRICS = ["qps", "p50_ms", "p99_ms", "server_cpu_s_per_1000", "peak_rss_mib", "event_p50_ms", "event_p99_ms",
                 "event_sent_p50_ms", "event_sent_p99_ms", "rss_kib_per_stream", "rss_kib_per_watcher",
                 "rss_end_mib"]


def medians_of(runs, metrics):
    return {m: median([r.get(m) for r in runs]) for m in metrics}


def slow_watchers(summary):
    """Put latency with non-reading watchers over without, per server."""
    by = {s["workload"]: s for s in summary}
    base, slow = SLOW_PAIR
    if base not in by or slow not in by:
        return None
    out = {}
    for server in ("corekv", "etcd"):
        b, w = by[base]["medians"][server], by[slow]["medians"][server]
        out[server] = {
            "base_p50_ms": b["p50_ms"], "base_p99_ms": b["p99_ms"],
            "slow_p50_ms": w["p50_ms"], "slow_p99_ms": w["p99_ms"],
            "p50_slow_over_base": ratio(w["p50_ms"], b["p50_ms"]),
            "p99_slow_over_base": ratio(w["p99_ms"], b["p99_ms"]),
            "base_qps": b["qps"], "slow_qps": w["qps"],
            "slow_rss_set_up_mib": w["rss_set_up_mib"], "slow_rss_end_mib": w["rss_end_mib"],
            "slow_peak_rss_mib": w["peak_rss_mib"],
        }
    return out


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits=2):
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def target_notes(workload, ratios):
    notes = []
    for name, metric, bound, direction, text in TARGETS:
        if name != workload or ratios.get(metric) is None:
            continue
        met = ratios[metric] >= bound if direction == ">=" else ratios[metric] <= bound
        notes.append(f"{text}: {'met' if met else 'not met'}")
    cpu = ratios.get("server_cpu_s_per_1000")
    if cpu is not None:
        notes.append(f"CPU/req <= 1/5: {'met' if cpu <= CPU_TARGET else 'not met'}")
    rss = ratios.get("peak_rss_mib")
    if rss is not None:
        notes.append(f"RSS <= 1/3: {'met' if rss <= RSS_TARGET else 'not met'}")
    return "; ".join(notes)


def main():
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    meta = read_meta(work)
    main_runs, xcheck_runs = [], []
    for line in (work / "index.tsv").read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == "main":
            _, _, server, workload, round_, run_dir = fields
            main_runs.append(main_run(server, workload, round_, Path(run_dir)))
        elif fields[0] == "xcheck":
            _, tool, server, kind, round_, run_dir = fields
            xcheck_runs.append(xcheck_run(tool, server, kind, round_, Path(run_dir)))

    workloads = list(dict.fromkeys(r["workload"] for r in main_runs))
    summary = []
    for w in workloads:
        per_server = {s: medians_of([r for r in main_runs if r["workload"] == w and r["server"] == s], METRICS)
                      for s in ("corekv", "etcd")}
        ratios = {m: ratio(per_server["corekv"][m], per_server["etcd"][m]) for m in RATIO_METRICS}
        summary.append({
            "workload": w,
            "description": DESCRIPTIONS.get(w, w),
            "corekv_bench_args": meta.get(f"args.{w}", ""),
            "ratios_corekv_over_etcd": ratios,
            "targets": target_notes(w, ratios),
            "medians": per_server,
        })

    xsummary = []
    for kind in dict.fromkeys(r["workload"] for r in xcheck_runs):
        for server in ("corekv", "etcd"):
            row = {"workload": kind, "server": server}
            for tool in ("corekv-bench", "etcd-benchmark"):
                runs = [r for r in xcheck_runs if r["workload"] == kind and r["server"] == server and r["tool"] == tool]
                row[tool] = medians_of(runs, ["qps", "p50_ms", "p99_ms", "generator_whole_process_us_per_request",
                                              "generator_max_rss_mib", "server_cpu_s_per_1000", "errors"])
            row["generator_cpu_ratio_ours_over_etcd_tool"] = ratio(
                row["corekv-bench"]["generator_whole_process_us_per_request"],
                row["etcd-benchmark"]["generator_whole_process_us_per_request"])
            xsummary.append(row)

    members = int(meta.get("members", "1"))
    shape = "single node" if members == 1 else f"{members}-member clusters ({members} processes each)"
    result = {
        "title": f"corekv vs {meta.get('etcd_version', 'etcd')}: {shape}",
        # Only cluster reports carry the size here (single-node output is unchanged).
        **({"members": members} if members > 1 else {}),
        "meta": meta,
        "noise": ("Shared 2-vCPU VM: other engineers' builds and tests ran during the measurement, and the server "
                  "and the generator share the two vCPUs. Treat ratios as rough; medians held better than tails."),
        "summary": summary,
        "slow_watchers": slow_watchers(summary),
        "cross_check": xsummary,
        "runs": main_runs,
        "cross_check_runs": xcheck_runs,
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def issue5(result, add):
    """Watch delivery, memory per watcher and stream, keep-alives, slow watchers."""
    by = {s["workload"]: s for s in result["summary"]}
    if not any(w in by for w in WATCH_WORKLOADS + ("lease-keepalive-100c",) + SLOW_PAIR):
        return
    add("## Watch, lease keep-alive and slow watchers (issue 5)")
    add("")
    for name in WATCH_WORKLOADS:
        w = by.get(name)
        if w:
            r = w["ratios_corekv_over_etcd"]
            add(f"**{name} ratios (corekv / etcd):** event latency (put acknowledged -> event received) "
                f"p50 {fmt_ratio(r['event_p50_ms'])}, p99 {fmt_ratio(r['event_p99_ms'])}; put sent -> event received "
                f"p50 {fmt_ratio(r['event_sent_p50_ms'])}, p99 {fmt_ratio(r['event_sent_p99_ms'])}; RSS per watcher "
                f"{fmt_ratio(r['rss_kib_per_watcher'])}, per stream {fmt_ratio(r['rss_kib_per_stream'])}.")
            add("")
            add("| server | ack->event p50 ms | p90 | p99 | p99.9 | max | sent->event p50 ms | p99 | events/s | "
                "delivered / expected | delivery errors | events before put ack | RSS KiB / stream | RSS KiB / watcher | "
                "RSS MiB: connected / streams open / watchers created / end | creates s |")
            add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for server in ("corekv", "etcd"):
                m = w["medians"][server]
                share = m["events_before_ack_share"]
                add(f"| {server} | {fmt(m['event_p50_ms'], 3)} | {fmt(m['event_p90_ms'], 3)} | "
                    f"{fmt(m['event_p99_ms'], 3)} | {fmt(m['event_p99_9_ms'], 3)} | {fmt(m['event_max_ms'], 3)} | "
                    f"{fmt(m['event_sent_p50_ms'], 3)} | {fmt(m['event_sent_p99_ms'], 3)} | {fmt(m['events_per_s'], 0)} | "
                    f"{fmt(m['events_delivered'], 0)} / {fmt(m['events_expected'], 0)} | {fmt(m['watch_errors'], 0)} | "
                    f"{'n/a' if share is None else f'{share * 100:.0f}%'} | {fmt(m['rss_kib_per_stream'], 1)} | "
                    f"{fmt(m['rss_kib_per_watcher'], 2)} | {fmt(m['rss_connected_mib'], 1)} / "
                    f"{fmt(m['rss_streams_open_mib'], 1)} / {fmt(m['rss_set_up_mib'], 1)} / {fmt(m['rss_end_mib'], 1)} | "
                    f"{fmt(m['setup_create_s'], 2)} |")
            add("")
            add("Event latency: a writer records when each put was sent and when its reply arrived; each watcher "
                "records when each event's response was decoded; matched by revision after the run (every expected "
                "event must arrive exactly once, in order, within the drain). An event that arrives before its put's "
                "reply counts as 0 from the ack. RSS per stream is the server's VmRSS growth while the streams "
                "were opened (each confirmed by a progress request) / their number; per watcher, the growth while "
                "the watches were created / their number (medians over rounds; allocator and GC slack included).")
            add("")
    k = by.get("lease-keepalive-100c")
    if k:
        r = k["ratios_corekv_over_etcd"]
        add(f"**lease-keepalive-100c ratios (corekv / etcd):** keep-alives/s {fmt_ratio(r['qps'])}, "
            f"p50 {fmt_ratio(r['p50_ms'])}, p99 {fmt_ratio(r['p99_ms'])}, server CPU per keep-alive "
            f"{fmt_ratio(r['server_cpu_s_per_1000'])}.")
        add("")
        add("| server | keep-alives/s | p50 ms | p99 ms | p99.9 ms | server CPU s / 1k | errors |")
        add("|---|---|---|---|---|---|---|")
        for server in ("corekv", "etcd"):
            m = k["medians"][server]
            add(f"| {server} | {fmt(m['qps'], 0)} | {fmt(m['p50_ms'], 3)} | {fmt(m['p99_ms'], 3)} | "
                f"{fmt(m['p99_9_ms'], 3)} | {fmt(m['server_cpu_s_per_1000'], 3)} | {fmt(m['errors'], 0)} |")
        add("")
    sw = result.get("slow_watchers")
    if sw:
        add("**Put latency with 1,000 non-reading watchers** (put-paced-slow-1000w over put-paced, same server; "
            "1 = flat):")
        add("")
        add("| server | put p50 ms without / with | p99 ms without / with | p50 with / without | p99 with / without "
            "| put/s without / with | server RSS MiB with: watchers created / end |")
        add("|---|---|---|---|---|---|---|")
        for server in ("corekv", "etcd"):
            m = sw[server]
            add(f"| {server} | {fmt(m['base_p50_ms'], 3)} / {fmt(m['slow_p50_ms'], 3)} | "
                f"{fmt(m['base_p99_ms'], 3)} / {fmt(m['slow_p99_ms'], 3)} | {fmt_ratio(m['p50_slow_over_base'])} | "
                f"{fmt_ratio(m['p99_slow_over_base'])} | {fmt(m['base_qps'], 0)} / {fmt(m['slow_qps'], 0)} | "
                f"{fmt(m['slow_rss_set_up_mib'], 1)} / {fmt(m['slow_rss_end_mib'], 1)} |")
        add("")


def window_overhead(runs):
    """The range of (CPU window - measured phase) over cluster runs, as text."""
    extra = [r["server_cpu_window_s"] - r["elapsed_s"] for r in runs if r.get("server_cpu_window_s") is not None]
    if not extra:
        return "n/a"
    return f"{min(extra):.2f}-{max(extra):.2f} s"


def markdown(result):
    meta, lines = result["meta"], []
    add = lines.append
    add(f"# {result['title']} ({meta['started'][:10]})")
    add("")
    add(f"Measured {meta['started']} to {meta['finished']} (UTC) on {meta['nproc']} vCPUs ({meta['cpu']}), "
        f"Linux {meta['kernel']}, {meta['mem']}, data on {meta['disk']}. corekv {meta['commit']} "
        f"(`cargo build --release`, {meta['rustc']}) against {meta['etcd_version']} (Debian etcd-server).")
    add("")
    add(f"**Noisy numbers.** {result['noise']} Load average (1, 5, 15 min) at start: {meta['load_start']}; "
        f"at end: {meta['load_end']}; each run's is listed below.")
    add("")
    members = result.get("members", 1)
    if members == 1:
        add(f"Method: {meta['rounds']} rounds; in each round every workload runs against a fresh corekv, then a fresh "
            f"etcd (A B A B), each with a new data directory, for {meta['duration']} each, driven by `corekv-bench` "
            f"(one generator thread). Server CPU is utime+stime from /proc/<pid>/stat over the measured phase, "
            f"per 1,000 requests; peak RSS is the server's VmHWM at the end. Medians over rounds, per metric.")
    else:
        add(f"Method: {meta['rounds']} rounds; in each round every workload runs against a fresh {members}-member "
            f"corekv cluster, then a fresh {members}-member etcd cluster (A B A B), every member with a new data "
            f"directory and its own loopback address, all {members} processes on this one machine, for "
            f"{meta['duration']} each, driven by `corekv-bench` (one generator thread). The generator gets all "
            f"{members} client endpoints, the leader's first (connection g goes to endpoint g mod {members}: put-1c's "
            f"single connection goes to the leader; of 100 connections 34 go to the leader and 33 to each "
            f"follower); the leader is whichever member the fresh cluster elected (listed per run below). "
            f"**Server CPU and RSS are sums over the {members} processes**: CPU is utime+stime of every member from "
            f"/proc/<pid>/stat, read by compare.sh right before and right after the generator command, per 1,000 "
            f"requests of the measured phase. That window is the measured phase plus the generator's start-up, "
            f"connect and drain ({window_overhead(result['runs'])} here), but no preload: the range workloads' keys "
            f"are put by a separate command before it. Server cores busy is that CPU over the same window; peak RSS "
            f"is the sum of the {members} members' VmHWM at the end. Medians over rounds, per metric.")
    add("")
    add("## Ratios (corekv / etcd, medians)")
    add("")
    add("| workload | QPS | p50 | p99 | server CPU / request | peak RSS | issue 6 targets |")
    add("|---|---|---|---|---|---|---|")
    for s in result["summary"]:
        r = s["ratios_corekv_over_etcd"]
        add(f"| {s['workload']} | {fmt_ratio(r['qps'])} | {fmt_ratio(r['p50_ms'])} | {fmt_ratio(r['p99_ms'])} | "
            f"{fmt_ratio(r['server_cpu_s_per_1000'])} | {fmt_ratio(r['peak_rss_mib'])} | {s['targets']} |")
    add("")
    add("Higher is better for QPS; lower is better for latency, CPU and RSS.")
    add("")
    issue5(result, add)
    add("## Medians")
    add("")
    summed = "" if members == 1 else f" (sum of {members})"
    add(f"| workload | server | QPS | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU s / 1k req{summed} | "
        f"server cores busy{summed} | peak RSS MiB{summed} | generator CPU us/req | generator cores busy | errors |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in result["summary"]:
        for server in ("corekv", "etcd"):
            m = s["medians"][server]
            add(f"| {s['workload']} | {server} | {fmt(m['qps'], 0)} | {fmt(m['p50_ms'], 3)} | {fmt(m['p90_ms'], 3)} | "
                f"{fmt(m['p99_ms'], 3)} | {fmt(m['p99_9_ms'], 3)} | {fmt(m['max_ms'], 3)} | "
                f"{fmt(m['server_cpu_s_per_1000'], 3)} | {fmt(m['server_cores_busy'])} | {fmt(m['peak_rss_mib'], 1)} | "
                f"{fmt(m['generator_us_per_request'], 1)} | {fmt(m['generator_cores_busy'])} | {fmt(m['errors'], 0)} |")
    add("")
    add("Workloads: " + "; ".join(f"**{s['workload']}**: {s['description']}" for s in result["summary"]) + ".")
    add("")
    if members > 1:
        add(f"Cross-check with etcd's benchmark tool: {meta.get('cross_check_note', 'not run')} "
            f"(see the single-node results).")
        add("")
    if result["cross_check"]:
        add("## Cross-check: corekv-bench vs etcd's own benchmark tool")
        add("")
        add(f"The same shapes driven by etcd v3.4's `tools/benchmark` (built from Debian's source with "
            f"../shared/tools/etcd-benchmark-build.sh) and by corekv-bench with `--total`, each against a fresh "
            f"server. Generator CPU is the whole process (/usr/bin/time user+sys, set-up included) per request, "
            f"for both tools; server CPU is /proc around the whole tool run.")
        add("")
        add("| workload | server | tool | QPS | p50 ms | p99 ms | generator CPU us/req | generator max RSS MiB | "
            "server CPU s / 1k req | errors |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for row in result["cross_check"]:
            for tool in ("corekv-bench", "etcd-benchmark"):
                m = row[tool]
                add(f"| {row['workload']} | {row['server']} | {tool} | {fmt(m['qps'], 0)} | {fmt(m['p50_ms'], 3)} | "
                    f"{fmt(m['p99_ms'], 3)} | {fmt(m['generator_whole_process_us_per_request'], 1)} | "
                    f"{fmt(m['generator_max_rss_mib'], 1)} | {fmt(m['server_cpu_s_per_1000'], 3)} | "
                    f"{fmt(m['errors'], 0)} |")
        add("")
        ratios = [f"{row['workload']} on {row['server']}: {fmt_ratio(row['generator_cpu_ratio_ours_over_etcd_tool'])}"
                  for row in result["cross_check"]]
        add("Generator CPU per request, corekv-bench / etcd benchmark: " + "; ".join(ratios) + ".")
        add("")
    add("## Every run")
    add("")
    if members == 1:
        add("| workload | server | round | QPS | p50 ms | p99 ms | server CPU s / 1k | peak RSS MiB | generator us/req | "
            "errors | watch: ack->event p50 / p99 ms, delivery errors | load average at start |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        add(f"| workload | server | round | QPS | p50 ms | p99 ms | server CPU s / 1k{summed} | peak RSS MiB{summed} | "
            f"generator us/req | errors | watch: ack->event p50 / p99 ms, delivery errors | load average at start | "
            f"leader | CPU s per member | peak RSS MiB per member |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(result["runs"], key=lambda r: (r["workload"], r["server"], r["round"])):
        events = ""
        if r.get("event_p50_ms") is not None:
            events = f"{fmt(r['event_p50_ms'], 3)} / {fmt(r['event_p99_ms'], 3)}, {r['watch_errors']}"
        line = (f"| {r['workload']} | {r['server']} | {r['round']} | {fmt(r['qps'], 0)} | {fmt(r['p50_ms'], 3)} | "
                f"{fmt(r['p99_ms'], 3)} | {fmt(r['server_cpu_s_per_1000'], 3)} | {fmt(r['peak_rss_mib'], 1)} | "
                f"{fmt(r['generator_us_per_request'], 1)} | {r['errors']} | {events} | {r['load_average']} |")
        if r.get("member_usage"):
            usage = r["member_usage"]
            line += (f" {r['leader']} | " + " / ".join(f"{m['member']} {m['cpu_s']:.2f}" for m in usage) + " | "
                     + " / ".join(f"{m['member']} {m['peak_rss_mib']:.0f}" for m in usage) + " |")
        add(line)
    for r in sorted(result["cross_check_runs"], key=lambda r: (r["workload"], r["server"], r["tool"], r["round"])):
        add(f"| xcheck {r['workload']} ({r['tool']}) | {r['server']} | {r['round']} | {fmt(r['qps'], 0)} | "
            f"{fmt(r['p50_ms'], 3)} | {fmt(r['p99_ms'], 3)} | {fmt(r['server_cpu_s_per_1000'], 3)} | "
            f"{fmt(r['peak_rss_mib'], 1)} | {fmt(r['generator_whole_process_us_per_request'], 1)} (whole process) | "
            f"{fmt(r['errors'], 0)} | | {r['load_average']} |")
    add("")
    add("## Commands")
    add("")
    add("```sh")
    add(f"# the whole comparison")
    add(meta["compare_command"])
    if members == 1:
        add("# servers (a fresh --data-dir per run)")
        add(meta["corekv_cmd"])
        add(meta["etcd_cmd"])
        add("# generator, per workload (endpoint, --server-pid and --json filled in per run)")
        for s in result["summary"]:
            add(f"target/release/corekv-bench {s['corekv_bench_args']} --endpoints <server> "
                f"--duration {meta['duration']} --server-pid <pid> --json <file>")
    else:
        add(f"# servers: {members} members each (a fresh --data-dir per member and run)")
        for server in ("corekv", "etcd"):
            for i in range(1, members + 1):
                add(meta[f"{server}_cmd.m{i}"])
        add("# wait: etcdctl endpoint health on all members, and endpoint status -w json shows the same leader on all")
        add("# range workloads: their keys first, outside the CPU window")
        for s in result["summary"]:
            if f"preload.{s['workload']}" in meta:
                add(meta[f"preload.{s['workload']}"])
        add("# generator, per workload (endpoints leader first, and --json filled in per run; no --server-pid:")
        add("# compare.sh reads every member's /proc/<pid>/stat before and after the command)")
        for s in result["summary"]:
            extra = " --preload 0" if f"preload.{s['workload']}" in meta else ""
            add(f"target/release/corekv-bench {s['corekv_bench_args']}{extra} --endpoints <leader>,<follower>,<follower> "
                f"--duration {meta['duration']} --json <file>")
    if result["cross_check_runs"]:
        add("# cross-check (first round's exact commands)")
        seen = set()
        for r in result["cross_check_runs"]:
            key = (r["workload"], r["tool"], r["server"])
            if key not in seen and r["round"] == 1:
                seen.add(key)
                add(r["command"])
    add("```")
    add("")
    add("Exact per-run generator command lines are in the .json file (`runs[].command`).")
    add("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
