#!/usr/bin/env python3
"""Turns a bench/election.sh work directory into the dated results files.

Usage: election_report.py WORK_DIR OUT_PREFIX   (writes OUT_PREFIX.md and .json)

Reads WORK_DIR/meta.txt (key=value facts), WORK_DIR/kills.tsv (one line per
leader kill: server, kill number, killed and new leader, kill time and the
times after it in microseconds, poll and probe counts, rejoin time, the
kill's directory) and each kill's directory: load.json (corekv-bench
--json of the write load), probe.err (the failed probe puts' messages).
Per server it gives the median, min and max of the election time and of
the write unavailability over the kills.
"""

import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

SERVERS = ("corekv", "etcd")


def read_meta(work):
    meta = {}
    for line in (work / "meta.txt").read_text().splitlines():
        key, _, value = line.partition("=")
        meta[key] = value
    return meta


def ms(us):
    return int(us) / 1e3 if us not in ("", None) else None


def load_figures(kill_dir):
    """The write load's outcome (None when it left no JSON)."""
    path = kill_dir / "load.json"
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    res, lat = r["result"], r["result"]["latency_us"]
    return {
        "ok": res["ok"],
        "failed": res["failed"],
        "errors_by_code": res["errors_by_code"],
        "p50_ms": lat["p50"] / 1e3,
        "p99_ms": lat["p99"] / 1e3,
        "max_ms": lat["max"] / 1e3,
        "ok_per_second": res.get("ok_per_second"),
        "command": r["command"],
    }


def probe_errors(kill_dir):
    """The failed probes' messages, counted (ids and numbers folded)."""
    path = kill_dir / "probe.err"
    if not path.exists():
        return {}
    counts = Counter()
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        line = re.sub(r"^\{.*\"msg\":\"([^\"]*)\".*$", r"\1", line)  # etcdctl's JSON log lines
        line = re.sub(r"\d+(\.\d+)?", "N", line)
        counts[line[:160]] += 1
    return dict(counts.most_common(8))


def kill_row(fields):
    (server, k, old, new, t_kill, elected, elected_lower, write, polls, poll_window, probes, rejoin,
     kill_dir) = fields
    kill_dir = Path(kill_dir)
    polls = int(polls)
    return {
        "server": server,
        "kill": int(k),
        "killed_leader": old,
        "new_leader": new or None,
        "kill_time_unix_us": int(t_kill),
        "election_ms": ms(elected),
        "election_lower_bound_ms": ms(elected_lower) if elected else None,
        "write_unavailable_ms": ms(write),
        "status_polls": polls,
        "poll_cycle_ms": int(poll_window) / 1e3 / polls if polls else None,
        "probe_puts_started": int(probes),
        "rejoin_ms": ms(rejoin),
        "load": load_figures(kill_dir),
        "probe_errors": probe_errors(kill_dir),
        "dir": str(kill_dir),
    }


def idle_seconds(load):
    """Whole seconds of the load (its last, partial one left out) with no successful put."""
    per_second = (load or {}).get("ok_per_second")
    if not per_second:
        return "n/a"
    return str(sum(1 for n in per_second[:-1] if n == 0))


def stats(values):
    done = [v for v in values if v is not None]
    return {
        "kills": len(values),
        "timed_out": len(values) - len(done),
        "median": statistics.median(done) if done else None,
        "min": min(done) if done else None,
        "max": max(done) if done else None,
    }


def fmt(value, digits=1):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def main():
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    meta = read_meta(work)
    kills = [kill_row(line.split("\t")) for line in (work / "kills.tsv").read_text().splitlines() if line.strip()]
    servers = [s for s in SERVERS if any(k["server"] == s for k in kills)]
    summary = {}
    for s in servers:
        rows = [k for k in kills if k["server"] == s]
        summary[s] = {
            "election_ms": stats([k["election_ms"] for k in rows]),
            "write_unavailable_ms": stats([k["write_unavailable_ms"] for k in rows]),
            "rejoin_ms": stats([k["rejoin_ms"] for k in rows]),
            "poll_cycle_ms_median": statistics.median([k["poll_cycle_ms"] for k in rows if k["poll_cycle_ms"]] or [0]),
        }
    result = {
        "title": f"Leader kill in a {meta['members']}-member cluster: election time and write unavailability, "
                 f"corekv vs {meta.get('etcd_version', 'etcd')}",
        "meta": meta,
        "noise": ("Shared 2-vCPU VM: the three members, the write load, the status poller and the put prober share "
                  "the two vCPUs, and other engineers' builds and tests may have run at the same time. The timing "
                  "is dominated by the election timeout (randomized in [1000, 2000) ms with the default "
                  "--election-timeout 1000 in both raft implementations), so a handful of kills gives a rough "
                  "median; compare medians, not single kills. Both run raft with check-quorum; corekv also with "
                  "pre-vote (always on), etcd 3.4 without (its --pre-vote defaults to false), which costs corekv "
                  "one extra loopback round trip per election."),
        "summary": summary,
        "kills": kills,
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def markdown(result):
    meta, lines = result["meta"], []
    add = lines.append
    add(f"# {result['title']} ({meta['started'][:10]})")
    add("")
    add(f"Measured {meta['started']} to {meta['finished']} (UTC) on {meta['nproc']} vCPUs ({meta['cpu']}), "
        f"Linux {meta['kernel']}, {meta['mem']}, data on {meta['disk']}. corekv {meta['commit']} "
        f"(`cargo build --release`, {meta['rustc']}) against {meta['etcd_version']} (Debian etcd-server); "
        f"{meta['etcdctl_version']}.")
    add("")
    add(f"**Noisy numbers.** {result['noise']} Load average (1, 5, 15 min) at start: {meta['load_start']}; "
        f"at end: {meta['load_end']}.")
    add("")
    add(f"Method: per server, one fresh {meta['members']}-member cluster on this machine (member i on its own "
        f"loopback address; both servers with their default --heartbeat-interval 100 and --election-timeout "
        f"1000), then {meta['kills']} times: wait until every member is healthy and all report the same leader "
        f"and term twice, 1 s apart; start a write load through the two followers (corekv-bench put, open loop at "
        f"{meta['load_rate']}/s, 4 clients on 2 connections, {meta['load_duration']}); after "
        f"{meta['load_lead_s']} s, SIGKILL the leader process. The kill time is bash's `$EPOCHREALTIME` "
        f"(microseconds) right after kill(2) returned.")
    add("")
    add(f"- **Election time**: from the kill until a poll of both survivors (one `etcdctl endpoint status -w json` "
        f"call for both, then {float(meta['poll_interval_s']) * 1e3:g} ms of sleep) first showed the same new "
        f"non-zero leader on both; the time is when that poll returned, an upper bound (the previous poll, which "
        f"did not see it yet, started at the lower bound given per kill; one poll cycle was about "
        + ", ".join(f"{fmt(result['summary'][s]['poll_cycle_ms_median'], 0)} ms for {s}" for s in result["summary"])
        + ").")
    add(f"- **Write unavailability**: from the kill until the first successful put through a survivor. From the "
        f"kill on, a prober starts one `etcdctl put` every {float(meta['probe_interval_s']) * 1e3:g} ms, alternating "
        f"between the two survivors, each with --command-timeout {meta['probe_timeout']}, in parallel, until one "
        f"succeeds; the time is when the first successful put returned (the 10-15 ms etcdctl takes to start "
        f"and connect included).")
    add(f"- Then the killed member is restarted on its data directory with its original command line (both servers "
        f"then ignore the --initial-cluster flags) and must be healthy and follow the new leader (\"rejoin\") "
        f"before the next kill. A kill without a result within {meta['timeout_s']} s counts as timed out.")
    add("")
    add("## Summary (per server, over the kills)")
    add("")
    add("| server | kills | election ms: median | min | max | write unavailability ms: median | min | max | "
        "timed out (election / write) | rejoin ms: median |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for s, m in result["summary"].items():
        e, w, r = m["election_ms"], m["write_unavailable_ms"], m["rejoin_ms"]
        add(f"| {s} | {e['kills']} | {fmt(e['median'])} | {fmt(e['min'])} | {fmt(e['max'])} | {fmt(w['median'])} | "
            f"{fmt(w['min'])} | {fmt(w['max'])} | {e['timed_out']} / {w['timed_out']} | {fmt(r['median'], 0)} |")
    add("")
    if set(result["summary"]) == set(SERVERS):
        c, e = result["summary"]["corekv"], result["summary"]["etcd"]
        parts = []
        for key, text in (("election_ms", "election time"), ("write_unavailable_ms", "write unavailability")):
            if c[key]["median"] is not None and e[key]["median"]:
                parts.append(f"{text} {c[key]['median'] / e[key]['median']:.2f}x")
        if parts:
            add("Median ratios (corekv / etcd): " + ", ".join(parts) + ".")
            add("")
    add("## Every kill")
    add("")
    add("| server | kill | killed | new leader | election ms (lower bound) | write unavailability ms | status polls | "
        "probe puts started | load puts ok / failed | load: seconds without a put | load put max ms | rejoin ms |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in result["kills"]:
        load = k["load"] or {}
        add(f"| {k['server']} | {k['kill']} | {k['killed_leader']} | {k['new_leader'] or 'none'} | "
            f"{fmt(k['election_ms'])} ({fmt(k['election_lower_bound_ms'])}) | {fmt(k['write_unavailable_ms'])} | "
            f"{k['status_polls']} | {k['probe_puts_started']} | {load.get('ok', 'n/a')} / {load.get('failed', 'n/a')} | "
            f"{idle_seconds(load)} | {fmt(load.get('max_ms'))} | {fmt(k['rejoin_ms'], 0)} |")
    add("")
    add("Why the write unavailability comes from the probes and not from the load: a put that was in flight "
        "to the killed leader (forwarded by a follower) is lost with it, and the follower fails it only at its "
        "server-side request timeout (etcd: 5 s + 2 x election timeout = 7 s, `etcdserver: request timed out`; "
        "corekv answers the same). The load has only 4 clients, and each one that had such a put in flight "
        "stalls until that timeout; when all 4 had, the load stops for about 7 s, whatever the election took. "
        "\"Seconds without a put\" counts the load's whole seconds with no "
        "successful put, and its longest put (counted from its scheduled start, open loop) shows that timeout when a client "
        "had such a put. "
        "Failed load puts by gRPC code, the load's puts per second, and the failed probes' messages are in the "
        ".json file (`kills[].load`, `kills[].probe_errors`).")
    add("")
    add("## Commands")
    add("")
    add("```sh")
    add("# the whole measurement")
    add(meta["election_command"])
    add(f"# servers: {meta['members']} members each (fresh data directories; a killed member restarts with the "
        f"same line)")
    for s in SERVERS:
        for i in range(1, int(meta["members"]) + 1):
            add(meta[f"{s}_cmd.m{i}"])
    add("# the write load, per kill")
    add(meta["load_cmd"])
    add("# the kill: kill -KILL <leader pid>; then, until both survivors name the same new leader:")
    add(meta["poll_cmd"])
    add("# and, in parallel, until one succeeds:")
    add(meta["probe_cmd"])
    add("```")
    add("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
