"""Helpers for scripts/check-dashboard.sh (run by it; not a test on its own).

  produce  --brokers B --prefix P         create P.{metrics,scores,alerts,dlq}; write the NAB
                                          fixture plus a few malformed records to P.metrics
                                          (needs confluent-kafka: the demo venv)
  free-ports N                            print N free TCP ports on 127.0.0.1
  wait     --metrics URL --scored N --dlq M --timeout S
                                          wait until the daemon has scored N records and delivered
                                          M dead letters
  wait-scrapes --prometheus URL --count N --since T --timeout S
                                          wait until Prometheus holds N successful scrapes of the
                                          daemon taken after Unix time T
  check    --prometheus URL --dashboard FILE
                                          evaluate every panel target of the dashboard through
                                          /api/v1/query; each must succeed and return data
  lint     FILE                           static checks (no Prometheus): schemaVersion >= 36, the
                                          ${datasource} variable used everywhere (no fixed uid),
                                          the metrics the panels must show (run by check-deploy.sh)

All but `produce` use only the standard library.
"""
import argparse
import csv
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/nab/art_daily_jumpsup.csv"
SERIES = "art_daily_jumpsup"

# One record per decode error code that window mode (features = ["value"], key_field = "series",
# timestamp_field = "timestamp") can produce, so every `code` series has data.
MALFORMED = [
    b"this is not json",
    b'{"series": "bad", "timestamp": "2014-04-01 00:00:00"}',
    b'{"series": "bad", "timestamp": "2014-04-01 00:00:00", "value": "high"}',
    b'{"series": {"nested": true}, "timestamp": "2014-04-01 00:00:00", "value": 1.0}',
    b'{"series": "bad", "timestamp": {"nested": true}, "value": 1.0}',
]

# Grafana's built-in interval variables, replaced by fixed values (the run lasts about a minute).
MACROS = {
    "$__rate_interval": "30s",
    "${__rate_interval}": "30s",
    "$__interval": "30s",
    "${__interval}": "30s",
    "$__range": "5m",
    "${__range}": "5m",
    "$__range_s": "300",
    "$__range_ms": "300000",
}


def produce(args):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = [f"{args.prefix}.{k}" for k in ("metrics", "scores", "alerts", "dlq")]
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result()
    rows = list(csv.DictReader(FIXTURE.open()))
    p = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    bad_at = {len(rows) * (i + 1) // (len(MALFORMED) + 1): m for i, m in enumerate(MALFORMED)}
    for i, r in enumerate(rows):
        if i in bad_at:
            p.produce(topics[0], bad_at[i], key=b"bad")
        value = {"series": SERIES, "timestamp": r["timestamp"], "value": float(r["value"])}
        p.produce(topics[0], json.dumps(value).encode(), key=SERIES.encode())
        p.poll(0)
    left = p.flush(30)
    if left:
        sys.exit(f"{left} records were not delivered to {topics[0]}")
    print(f"{len(rows)} {len(MALFORMED)}")


def free_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def scrape(url):
    """Sums of each metric family in a Prometheus text exposition."""
    text = urllib.request.urlopen(url, timeout=2).read().decode()
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{")[0]
        sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def wait(args):
    deadline = time.time() + args.timeout
    last = {}
    while time.time() < deadline:
        try:
            last = scrape(args.metrics)
        except OSError:
            time.sleep(0.5)
            continue
        scored = last.get("anomalyd_records_scored_total", 0)
        dlq = last.get("anomalyd_decode_errors_total", 0)
        if scored >= args.scored and dlq >= args.dlq and last.get("anomalyd_pending_records", 1) == 0:
            print(f"daemon scored {int(scored)} records: {int(last.get('anomalyd_anomalies_total', 0))} "
                  f"anomalies ({int(last.get('anomalyd_alert_top_feature_total', 0))} by top feature), "
                  f"{int(dlq)} decode errors")
            return 0
        time.sleep(0.5)
    sys.exit(f"timed out waiting for the daemon: scored "
             f"{last.get('anomalyd_records_scored_total')} of {args.scored}, decode errors "
             f"{last.get('anomalyd_decode_errors_total')} of {args.dlq}")


def query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except OSError as e:
        return {"status": "error", "error": str(e)}


def wait_scrapes(args):
    """Waits for `count` successful scrapes of the daemon that started after `since`."""
    deadline = time.time() + args.timeout
    n = 0
    while time.time() < deadline:
        r = query(args.prometheus, 'up{job="anomalyd"}[2m]')
        res = r.get("data", {}).get("result", []) if r.get("status") == "success" else []
        n = sum(1 for s in res for ts, v in s["values"] if float(ts) > args.since and v == "1")
        if n >= args.count:
            print(f"prometheus scraped the daemon {n} times since it finished")
            return 0
        time.sleep(0.5)
    sys.exit(f"timed out waiting for prometheus: {n} of {args.count} scrapes")


def substitute(expr, variables):
    for k in sorted(MACROS, key=len, reverse=True):
        expr = expr.replace(k, MACROS[k])
    for name in variables:
        # $var, ${var}, ${var:format} and [[var]]: any value (the regex `.*` of "All").
        expr = re.sub(r"\$\{" + name + r"(:[a-z]+)?\}|\$" + name + r"\b|\[\[" + name + r"\]\]", ".*", expr)
    return expr


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def check(args):
    dash = json.loads(Path(args.dashboard).read_text())
    variables = [v["name"] for v in dash.get("templating", {}).get("list", [])]
    passed = failed = 0

    def report(ok, what, expr, detail=""):
        nonlocal passed, failed
        passed += ok
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {what}: {expr}" + (f"  -- {detail}" if detail else ""))

    # Template variables: label_values(metric{...}, label) must list at least one value.
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
        if not m:
            report(False, f"variable {v['name']}", q, "not a label_values() query")
            continue
        match, label = substitute(m.group(1), variables), m.group(2)
        url = f"{args.prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
        try:
            r = json.load(urllib.request.urlopen(url, timeout=10))
        except (OSError, ValueError) as e:
            r = {"status": "error", "error": str(e)}
        ok = r.get("status") == "success" and bool(r.get("data"))
        report(ok, f"variable {v['name']}", q, "" if ok else r.get("error", "no values"))

    # Annotations: must parse (they fire on events, so no data is expected in a short run).
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" not in a:
            continue
        expr = substitute(a["expr"], variables)
        r = query(args.prometheus, expr)
        ok = r.get("status") == "success"
        report(ok, f"annotation {a['name']!r} (parse only)", expr, "" if ok else r.get("error", ""))

    # Every panel target: must succeed and return at least one series.
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("hide") or "expr" not in t:
                continue
            expr = substitute(t["expr"], variables)
            r = query(args.prometheus, expr)
            what = f"panel {p.get('title')!r} {t.get('refId', '')}"
            if r.get("status") != "success":
                report(False, what, expr, r.get("error", "query failed"))
            elif not r["data"]["result"]:
                report(False, what, expr, "empty result")
            else:
                report(True, what, expr, f"{len(r['data']['result'])} series")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# Metrics the dashboard must show (issue 5's panels); `lint` requires each in some expression.
REQUIRED_METRICS = [
    "anomalyd_records_consumed_total", "anomalyd_records_scored_total", "anomalyd_messages_produced_total",
    "anomalyd_consumer_lag_records", "anomalyd_anomalies_total", "anomalyd_score_bucket", "anomalyd_threshold",
    "anomalyd_alert_top_feature_total", "anomalyd_model_version", "anomalyd_training_runs_total",
    "anomalyd_scoring_duration_seconds_bucket", "anomalyd_decode_errors_total", "anomalyd_producer_errors_total",
    "anomalyd_batch_size_records_bucket", "anomalyd_batch_linger_seconds_bucket",
    "process_resident_memory_bytes", "process_cpu_seconds_total",
]
DS_VAR = {"type": "prometheus", "uid": "${datasource}"}


def lint(args):
    passed = failed = 0

    def report(ok, what, detail=""):
        nonlocal passed, failed
        passed += ok
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} dashboard {what}" + (f"  -- {detail}" if detail else ""))

    try:
        dash = json.loads(Path(args.file).read_text())
    except ValueError as e:
        report(False, "is JSON", str(e))
        return 1
    report(dash.get("schemaVersion", 0) >= 36, "schemaVersion >= 36", str(dash.get("schemaVersion")))
    variables = dash.get("templating", {}).get("list", [])
    ds = [v for v in variables if v.get("name") == "datasource"]
    report(len(ds) == 1 and ds[0].get("type") == "datasource" and ds[0].get("query") == "prometheus",
           "has a `datasource` variable of type datasource (prometheus)")
    bad = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource" and v != DS_VAR and v != {"type": "grafana", "uid": "-- Grafana --"}:
                    bad.append(f"{path}.{k} = {json.dumps(v)}")
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(dash, "$")
    panels = [p for p in walk_panels(dash.get("panels", [])) if p.get("type") != "row"]
    missing = [p.get("title") for p in panels if p.get("datasource") != DS_VAR]
    missing += [f"{p.get('title')} {t.get('refId')}" for p in panels for t in p.get("targets", [])
                if t.get("datasource") != DS_VAR]
    missing += [v["name"] for v in variables if v.get("type") == "query" and v.get("datasource") != DS_VAR]
    report(not bad and not missing, "uses ${datasource} in every panel, target and query variable",
           "; ".join(bad + [f"{m} has no datasource" for m in missing])[:500])
    ids = [p.get("id") for p in walk_panels(dash.get("panels", []))]
    report(len(ids) == len(set(ids)) and None not in ids, "panel ids are unique")
    no_targets = [p.get("title") for p in panels if not p.get("targets")]
    report(not no_targets, "every panel has targets", ", ".join(map(str, no_targets)))
    exprs = " ".join(t.get("expr", "") for p in panels for t in p.get("targets", []))
    absent = [m for m in REQUIRED_METRICS if not re.search(r"\b" + m + r"\b", exprs)]
    report(not absent, f"shows the {len(REQUIRED_METRICS)} required metrics", ("missing: " + ", ".join(absent)) if absent else "")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("produce")
    a.add_argument("--brokers", required=True)
    a.add_argument("--prefix", required=True)
    a = sub.add_parser("free-ports")
    a.add_argument("n", type=int)
    a = sub.add_parser("wait")
    a.add_argument("--metrics", required=True)
    a.add_argument("--scored", type=int, required=True)
    a.add_argument("--dlq", type=int, required=True)
    a.add_argument("--timeout", type=float, default=60)
    a = sub.add_parser("wait-scrapes")
    a.add_argument("--prometheus", required=True)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--since", type=float, default=0, help="Unix time; count scrapes after it")
    a.add_argument("--timeout", type=float, default=30)
    a = sub.add_parser("lint")
    a.add_argument("file")
    a = sub.add_parser("check")
    a.add_argument("--prometheus", required=True)
    a.add_argument("--dashboard", required=True)
    args = ap.parse_args()
    return {"produce": produce, "free-ports": free_ports, "wait": wait,
            "wait-scrapes": wait_scrapes, "check": check, "lint": lint}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
