"""Streamed NAB parity: the whole NAB corpus through the broker into one daemon, scored by
anomalyd's own NAB scorer, beside `anomalyd eval` on the same files with the same settings.

Run by scripts/nab-stream.sh (which installs everything and starts the local broker).

The daemon runs in window mode with the defaults (window 32; `threshold.kind = "auto"`: the
likelihood fed window discords), one key per series, records of all series interleaved in
timestamp order on one partition. Every record's likelihood is read back from the scores
topic and handed to `anomalyd eval --scores`, the NAB scorer `eval` itself uses. `eval` is
run twice with the same settings: with the quality table's protocol (each series' first
15 % trains its model, and the likelihood is silent for min(750, those rows)), and with the
daemon's (silent for the first 750 records of each key, whatever the series' length).
"""
import argparse
import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from demo import daemon_env, metric

ROOT = Path(__file__).resolve().parent.parent
# The daemon's likelihood warm-up per key (default.toml's threshold.likelihood.warmup).
DAEMON_WARMUP = 750

# Only the input is named; the rest is the defaults, but for a session timeout long enough
# that a loaded 2-core machine (scoring, retraining and the broker on the same cores) does
# not lose the group membership mid-run.
SETTINGS = """
[kafka]
session_timeout = "45s"

[input]
mode = "window"
features = ["value"]
key_field = "series"
timestamp_field = "timestamp"
"""


def nab_records(data):
    """Every record of every labelled NAB series, in timestamp order across series."""
    files = sorted(p for p in (data / "data").rglob("*.csv"))
    records = []
    for path in files:
        key = f"{path.parent.name}/{path.name}"
        with path.open() as f:
            for i, row in enumerate(csv.DictReader(f)):
                records.append((dt.datetime.fromisoformat(row["timestamp"]), key, i,
                                row["timestamp"], float(row["value"])))
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    return files, records


def read_scores(brokers, topic, expected):
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"nab-stream-reader-{time.time()}",
                  "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, 0, 0)])
    out, idle = [], 0
    while len(out) < expected and idle < 30:
        batch = c.consume(num_messages=10000, timeout=1.0)
        idle = 0 if batch else idle + 1
        out += [json.loads(m.value()) for m in batch if not m.error()]
    c.close()
    return out


def eval_nab(binary, config, files, labels, report, extra):
    cmd = [binary, "eval", "--config", str(config), "--labels", str(labels),
           "--report", str(report), *extra]
    for f in files:
        cmd += ["--input", str(f)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
    return json.loads(report.read_text())["nab"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="the NAB folder (data/, labels/)")
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--binary", default=str(ROOT / "target/release/anomalyd"))
    ap.add_argument("--work", default=str(ROOT / "target/nab-stream"))
    ap.add_argument("--http", default="127.0.0.1:9466")
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    labels = data / "labels" / "combined_windows.json"

    files, records = nab_records(data)
    run = time.strftime("%Y%m%d-%H%M%S")
    topics = {k: f"nab-stream-{run}.{k}" for k in ("metrics", "scores", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        f.result()
    started = time.time()
    p = Producer({"bootstrap.servers": args.brokers, "linger.ms": 20,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1000000})
    for _, key, _, ts, value in records:
        body = json.dumps({"series": key, "timestamp": ts, "value": value})
        while True:
            try:
                p.produce(topics["metrics"], body.encode(), key=key)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    p.flush(120)
    produced = time.time() - started
    print(f"produced {len(records)} records of {len(files)} NAB series to {topics['metrics']} "
          f"in {produced:.0f} s", flush=True)

    config = work / "daemon.toml"
    config.write_text(SETTINGS)
    env = daemon_env(args.brokers, f"nab-stream-{run}", topics, args.http)
    url = f"http://{args.http}/metrics"
    log_path = work / "daemon.log"
    started = time.time()
    with log_path.open("w") as log:
        daemon = subprocess.Popen([args.binary, "run", "--config", str(config)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        scored, last, last_change = 0, -1, time.time()
        while scored < len(records):
            if daemon.poll() is not None:
                sys.exit(f"anomalyd exited with {daemon.returncode}; see {log_path}")
            if time.time() - last_change > 120:
                daemon.terminate()
                sys.exit(f"no progress for 2 minutes at {scored} records; see {log_path}")
            time.sleep(1)
            scored = int(metric(url, "anomalyd_records_scored_total") or 0)
            if scored != last:
                last, last_change = scored, time.time()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    streamed = time.time() - started
    scores = read_scores(args.brokers, topics["scores"], len(records))
    print(f"daemon scored {scored} records in {streamed:.0f} s (exit {code}); "
          f"{len(scores)} score messages read back", flush=True)
    dead = int(metric(url, "anomalyd_dead_letters_total") or 0)

    scores_csv = work / "daemon_scores.csv"
    with scores_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "timestamp", "score"])
        for m in scores:
            w.writerow([m["key"], m["timestamp"], m.get("likelihood", 0.0)])
    daemon_nab = eval_nab(args.binary, config, files, labels, work / "daemon.json",
                          ["--scores", str(scores_csv)])
    table_nab = eval_nab(args.binary, config, files, labels, work / "eval.json", [])
    warmup_nab = eval_nab(args.binary, config, files, labels, work / "eval_warmup.json",
                          ["--train-records", str(DAEMON_WARMUP)])
    result = {
        "records": len(records), "series": len(files), "score_messages": len(scores),
        "dead_letters": dead, "produce_s": round(produced, 1), "stream_s": round(streamed, 1),
        "daemon": daemon_nab, "eval_table_protocol": table_nab,
        "eval_daemon_warmup": warmup_nab,
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print()
    print("NAB (standard / low FP / low FN)")
    for name, r in [("daemon, streamed through the broker", daemon_nab),
                    (f"eval, warm-up {DAEMON_WARMUP} per series (the daemon's)", warmup_nab),
                    ("eval, warm-up min(750, 15 % of the series) (the table's)", table_nab)]:
        print(f"  {name:<58} {r['standard']:5.1f} / {r['reward_low_fp']:5.1f} / "
              f"{r['reward_low_fn']:5.1f}")
    print(f"results: {work / 'result.json'}")
    return 0 if len(scores) == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
