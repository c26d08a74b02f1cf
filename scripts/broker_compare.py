"""Compares the throughput of two builds of the Tansu broker side by side, e.g. setup.sh's
light build (off-path crates at opt-level 0) against a full `opt-level = 3` build:

  ~/.cache/anomalyd/demo-venv/bin/python scripts/broker_compare.py \
      --perf target/release/examples/perf --tansu full=/path/to/full/bin/tansu \
      --tansu light=~/.cache/anomalyd/tansu-0.6.0/bin/tansu

Each round starts each build fresh (an empty SQLite database, 4-partition topics), one after
the other, and measures with `examples/perf.rs`, as scripts/bench.py does: produce N records
of 32 features, read them back with a consumer that only counts (raw), and the echo loop
(consume, produce the same bytes, commit: the ceiling for a pipeline with one output per
input). Prints one line of JSON per measurement and a Markdown table of the medians, with
each build's ratio to the first. Runs with a Python that has confluent-kafka (the demo's
venv): it shares scripts/bench.py's measuring code.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import broker_rates, perf_tool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def measure(args, tansu, folder, data, run_id):
    """One build, started fresh: the broker's own rates (scripts/bench.py's broker_rates)."""
    script = ROOT / "scripts" / "test-broker.sh"
    env = dict(os.environ, TANSU=tansu, PORT=str(args.port), TOPICS="in:4 echo:4")
    subprocess.run([script, "stop", folder], capture_output=True, env=env)
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([script, "start", folder], check=True, capture_output=True, env=env)
    try:
        return broker_rates(args.perf, f"127.0.0.1:{args.port}", data, args.records, run_id)
    finally:
        subprocess.run([script, "stop", folder], capture_output=True, env=env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perf", required=True, help="target/release/examples/perf")
    ap.add_argument("--tansu", action="append", required=True, metavar="LABEL=PATH",
                    help="a build to measure (give two or more; the first is the reference)")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=19400)
    ap.add_argument("--work", default=str(ROOT / "target" / "broker-compare"))
    args = ap.parse_args()
    builds = [spec.split("=", 1) for spec in args.tansu]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / "records.jsonl"
    if not data.exists():
        perf_tool(args.perf, "gen", "--records", args.records, "--features", 32, "--out", data)

    results = {label: [] for label, _ in builds}
    for r in range(args.rounds):
        for label, path in builds:
            res = measure(args, path, work / f"broker-{label}", data, f"{label}-{r}-{time.time():.0f}")
            print(json.dumps({"round": r, "build": label, **res}), flush=True)
            results[label].append(res)

    ref = builds[0][0]
    med = {label: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
           for label, runs in results.items()}
    print(f"\n{args.rounds} rounds of {args.records:,} records, medians "
          f"(ratio to {ref}):\n")
    print("| build | produce | raw consume | echo loop |")
    print("|---|---:|---:|---:|")
    for label, _ in builds:
        cells = [f"{med[label][k] / 1000:.1f}k/s ({med[label][k] / med[ref][k]:.2f})"
                 for k in ("produce", "raw", "echo")]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
