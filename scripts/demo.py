"""anomalyd demo: stream labelled data through the daemon, with its defaults, and report
what it found.

1. A NAB series (one metric every 5 minutes) in window mode: the defaults feed the anomaly
   likelihood window discords (docs/quality.md's best on NAB).
2. A SKAB experiment (8 sensors of a water pump at 1 Hz) in fields mode: the default
   autoencoder scores each record, and each alert names the sensors that explain it.

Run by scripts/demo.sh (which installs everything and starts the broker first).
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/nab/art_daily_jumpsup.csv"
LABELS = ROOT / "tests/fixtures/nab/labels.json"
SERIES = "art_daily_jumpsup"
SKAB = ROOT / "tests/fixtures/skab/other-4.csv"
SKAB_NAME = "SKAB other/4 (a simulated fluid leak)"


def metric(url, name):
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name:
            total = (total or 0.0) + float(value)
    return total


def daemon_env(brokers, group, topics, http):
    """The environment that points `anomalyd run` at `brokers` and `topics` (metrics, scores,
    alerts, dlq) with consumer group `group`, serving /metrics on `http`."""
    return dict(os.environ,
                ANOMALYD__KAFKA__BROKERS=brokers,
                ANOMALYD__KAFKA__GROUP_ID=group,
                ANOMALYD__KAFKA__INPUT_TOPIC=topics["metrics"],
                ANOMALYD__KAFKA__SCORES_TOPIC=topics["scores"],
                ANOMALYD__KAFKA__ALERTS_TOPIC=topics["alerts"],
                ANOMALYD__KAFKA__DLQ_TOPIC=topics["dlq"],
                ANOMALYD__HTTP__LISTEN=http)


def read_topic(brokers, topic):
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"demo-reader-{time.time()}",
                  "enable.auto.commit": False})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    while len(out) < high:
        out += [json.loads(m.value()) for m in c.consume(1000, 1.0) if not m.error()]
    c.close()
    return out


def episodes(alerts, gap):
    """Groups alerts whose offsets are at most `gap` apart: (first, last, alerts)."""
    groups = []
    for a in alerts:
        if groups and a["offset"] - groups[-1][-1]["offset"] <= gap:
            groups[-1].append(a)
        else:
            groups.append([a])
    return groups


def why(alert):
    return ", ".join(f"{t['feature']} {t['share']:.0%}" for t in alert.get("top_features", []))


def stream(args, run, name, records, config):
    """Produces `records` (key, JSON object) to a fresh input topic, runs anomalyd on it with
    `config` until every record is scored, stops it with SIGTERM, and returns its outputs."""
    topics = {k: f"demo-{run}-{name}.{k}" for k in ("metrics", "scores", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        f.result()
    p = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    for key, value in records:
        p.produce(topics["metrics"], json.dumps(value).encode(), key=key)
        p.poll(0)
    p.flush(30)
    env = daemon_env(args.brokers, f"demo-{run}-{name}", topics, args.http)
    log_path = ROOT / ".run" / f"demo-{run}-{name}.log"
    log_path.parent.mkdir(exist_ok=True)
    url = f"http://{args.http}/metrics"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([args.binary, "run", "--config", str(config)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"  anomalyd running (pid {daemon.pid}) on {topics['metrics']}, "
              f"metrics at {url}, log {log_path}")
        deadline = time.time() + 300
        scored = 0
        while scored < len(records):
            if daemon.poll() is not None:
                sys.exit(f"anomalyd exited with {daemon.returncode}; see {log_path}")
            if time.time() > deadline:
                daemon.terminate()
                sys.exit(f"timed out; see {log_path}")
            scored = int(metric(url, "anomalyd_records_scored_total") or 0)
            time.sleep(0.5)
        version = int(metric(url, "anomalyd_model_version") or 0)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    scores = read_topic(args.brokers, topics["scores"])
    alerts = read_topic(args.brokers, topics["alerts"])
    print(f"  {len(records)} records, {scored} scored, {len(scores)} score messages, "
          f"{len(alerts)} alerts (model v{version}); anomalyd exited {code} on SIGTERM")
    return scores, alerts, topics


def nab_part(args, run):
    print(f"1. NAB {SERIES}: one metric every 5 minutes, window mode (config/demo.toml)")
    rows = list(csv.DictReader(FIXTURE.open()))
    records = [(SERIES, {"series": SERIES, "timestamp": r["timestamp"], "value": float(r["value"])})
               for r in rows]
    scores, alerts, topics = stream(args, run, "nab", records, ROOT / "config/demo.toml")
    windows = json.loads(LABELS.read_text())[f"artificialWithAnomaly/{SERIES}.csv"]
    windows = [(s[:19], e[:19]) for s, e in windows]

    def labelled(ts):
        return any(s <= ts <= e for s, e in windows)

    print("  labelled anomaly window: " + ", ".join(f"{s} .. {e}" for s, e in windows))
    inside = sum(labelled(a["timestamp"]) for a in alerts)
    print(f"  alerts: {inside} inside the labelled window, {len(alerts) - inside} outside")
    for a in alerts:
        mark = "LABELLED" if labelled(a["timestamp"]) else "outside "
        print(f"    {mark} {a['timestamp']}  likelihood {a.get('likelihood', 0):.3f}  "
              f"window positions that differ most: {why(a)}")
    ok = inside > 0 and len(scores) == len(records)
    return ok, topics


def skab_part(args, run):
    print(f"2. {SKAB_NAME}: 8 sensors at 1 Hz, fields mode (config/demo-skab.toml)")
    with SKAB.open() as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    features = [c for c in rows[0] if c not in ("datetime", "anomaly", "changepoint")]
    records = [("pump", {"datetime": r["datetime"], **{c: float(r[c]) for c in features}})
               for r in rows]
    scores, alerts, _ = stream(args, run, "skab", records, ROOT / "config/demo-skab.toml")
    anomalous = {r["datetime"] for r in rows if float(r["anomaly"]) == 1.0}
    first = min(anomalous)
    inside = sum(a["timestamp"] in anomalous for a in alerts)
    print(f"  labelled fault: {len(anomalous)} records from {first}; "
          f"alerts: {inside} during the fault, {len(alerts) - inside} outside it")
    for group in episodes(alerts, 30):
        a = group[0]
        during = sum(g["timestamp"] in anomalous for g in group)
        mark = "FAULT  " if 2 * during > len(group) else "outside"
        print(f"    {mark} {a['timestamp']} .. {group[-1]['timestamp']}  {len(group):4d} alerts "
              f"({during} during the fault); first explained by {why(a)}")
    return inside > 0 and len(scores) == len(records)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--binary", default=str(ROOT / "target/release/anomalyd"))
    ap.add_argument("--http", default=os.environ.get("DEMO_HTTP", "127.0.0.1:9464"))
    args = ap.parse_args()
    run = time.strftime("%Y%m%d-%H%M%S")
    started = time.time()
    nab_ok, topics = nab_part(args, run)
    print()
    skab_ok = skab_part(args, run)
    print()
    print(f"done in {time.time() - started:.0f} s. Outputs of part 1: topics {topics['scores']}, "
          f"{topics['alerts']}, {topics['dlq']} on {args.brokers}")
    print("run it yourself with: target/release/anomalyd run --config config/demo.toml")
    return 0 if nab_ok and skab_ok else 1


if __name__ == "__main__":
    sys.exit(main())
