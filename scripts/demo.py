"""anomalyd demo: stream a labelled NAB series through the daemon and report what it found.

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


def read_topic(brokers, topic):
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"demo-reader-{time.time()}",
                  "enable.auto.commit": False})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    while len(out) < high:
        m = c.poll(1.0)
        if m is not None and not m.error():
            out.append(json.loads(m.value()))
    c.close()
    return out


def ranges(alerts):
    """Groups consecutive alert timestamps (5-minute steps) into (first, last, count)."""
    groups = []
    for a in alerts:
        ts = a["timestamp"]
        if groups and a["offset"] - groups[-1][3] <= 3:
            first, _, n, _ = groups[-1]
            groups[-1] = (first, ts, n + 1, a["offset"])
        else:
            groups.append((ts, ts, 1, a["offset"]))
    return [(f, l, n) for f, l, n, _ in groups]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--binary", default=str(ROOT / "target/release/anomalyd"))
    ap.add_argument("--http", default=os.environ.get("DEMO_HTTP", "127.0.0.1:9464"))
    args = ap.parse_args()

    run = time.strftime("%Y%m%d-%H%M%S")
    topics = {k: f"demo-{run}.{k}" for k in ("metrics", "scores", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        f.result()

    rows = list(csv.DictReader(FIXTURE.open()))
    p = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    for r in rows:
        value = {"series": SERIES, "timestamp": r["timestamp"], "value": float(r["value"])}
        p.produce(topics["metrics"], json.dumps(value).encode(), key=SERIES)
        p.poll(0)
    p.flush(30)
    print(f"produced {len(rows)} records of NAB {SERIES} to {topics['metrics']}")

    env = dict(os.environ,
               ANOMALYD__KAFKA__BROKERS=args.brokers,
               ANOMALYD__KAFKA__GROUP_ID=f"demo-{run}",
               ANOMALYD__KAFKA__INPUT_TOPIC=topics["metrics"],
               ANOMALYD__KAFKA__SCORES_TOPIC=topics["scores"],
               ANOMALYD__KAFKA__ALERTS_TOPIC=topics["alerts"],
               ANOMALYD__KAFKA__DLQ_TOPIC=topics["dlq"],
               ANOMALYD__HTTP__LISTEN=args.http)
    log_path = ROOT / ".run" / f"demo-{run}.log"
    log_path.parent.mkdir(exist_ok=True)
    url = f"http://{args.http}/metrics"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([args.binary, "run", "--config", str(ROOT / "config/demo.toml")],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"anomalyd running (pid {daemon.pid}), metrics at {url}, log {log_path}")
        deadline = time.time() + 300
        scored = 0
        while scored < len(rows):
            if daemon.poll() is not None:
                sys.exit(f"anomalyd exited with {daemon.returncode}; see {log_path}")
            if time.time() > deadline:
                daemon.terminate()
                sys.exit(f"timed out; see {log_path}")
            scored = int(metric(url, "anomalyd_records_scored_total") or 0)
            time.sleep(0.5)
        consumed = int(metric(url, "anomalyd_records_consumed_total") or 0)
        threshold = metric(url, "anomalyd_threshold")
        version = int(metric(url, "anomalyd_model_version") or 0)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)

    scores = read_topic(args.brokers, topics["scores"])
    alerts = read_topic(args.brokers, topics["alerts"])
    windows = json.loads(LABELS.read_text())[f"artificialWithAnomaly/{SERIES}.csv"]
    windows = [(s[:19], e[:19]) for s, e in windows]

    def labelled(ts):
        return any(s <= ts <= e for s, e in windows)

    print()
    print(f"records consumed {consumed}, scored {scored}, score messages {len(scores)} "
          f"(model v{version}, threshold {threshold:.4f}); anomalyd exited {code} on SIGTERM")
    print(f"labelled anomaly window(s): " + ", ".join(f"{s} .. {e}" for s, e in windows))
    inside = sum(labelled(a["timestamp"]) for a in alerts)
    print(f"alerts: {len(alerts)} ({inside} inside a labelled window, {len(alerts) - inside} outside)")
    for first, last, n in ranges(alerts):
        mark = "LABELLED" if labelled(first) or labelled(last) else "        "
        top = next(a for a in alerts if a["timestamp"] == first)["top_features"][0]
        print(f"  {mark} {first} .. {last}  {n:4d} alerts  top feature {top['feature']} "
              f"({top['share']:.0%} of the error)")
    print()
    print(f"outputs: topics {topics['scores']}, {topics['alerts']}, {topics['dlq']} "
          f"on {args.brokers}")
    print(f"metrics were served at {url} while it ran; run it yourself with:")
    print(f"  target/release/anomalyd run --config config/demo.toml")
    return 0 if inside > 0 and len(scores) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
