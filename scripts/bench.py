"""The performance harness behind scripts/bench.sh: measures anomalyd side by side with its
references in one run and writes docs/performance.md (and its plot).

Every figure is a ratio against a reference taken in the same run on the same machine:
  hot path    `anomalyd score` on one core vs the Python loop (scripts/bench_peer.py hot)
  end to end  raw consume / echo loop / `anomalyd run` / Python peer through two brokers,
              every pipeline's rate taken the same way (its output topic's high watermarks)
  latency     produce -> score arrival vs produce -> echo arrival, at steady rates
  memory      the daemon's peak RSS (VmHWM) in the end-to-end run and with 10k keys of state
  kernel      tch vs PyTorch scoring and training on one thread
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import daemon_env, metric  # noqa: E402



def hidden(width):
    """The autoencoder's hidden sizes: [64, 16], with the bottleneck below the input width."""
    return [64, min(16, width // 2)]
WIDTHS = [8, 32, 128]


def perf_tool(perf, *argv, check=True):
    """Runs `examples/perf.rs` and returns the JSON of its last line."""
    r = subprocess.run([str(perf), *map(str, argv)], capture_output=True, text=True,
                       env=dict(os.environ, RUST_BACKTRACE="0"))
    if check and r.returncode != 0:
        sys.exit(f"perf {argv[0]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def broker_rates(perf, brokers, data, n, run_id):
    """The broker's own rates: produce the file to topic `in` (4 partitions), read it back
    with a consumer that only counts (raw), and the echo loop from `in` to `echo` (consume,
    produce the same bytes, commit: the ceiling for a pipeline with one output per input),
    its rate taken from the output topic's high watermarks."""
    res = {"produce": perf_tool(perf, "produce", "--brokers", brokers, "--topic", "in",
                                "--file", data)["rate"]}
    res["raw"] = perf_tool(perf, "consume", "--brokers", brokers, "--topic", "in",
                           "--group", f"raw-{run_id}", "--records", n)["rate"]
    echo = subprocess.Popen([str(perf), "echo", "--brokers", brokers, "--in", "in",
                             "--out", "echo", "--group", f"echo-{run_id}",
                             "--records", str(n)], stdout=subprocess.DEVNULL)
    res["echo"] = perf_tool(perf, "watch", "--brokers", brokers, "--topic", "echo",
                            "--records", n)["rate"]
    echo.wait()
    return res


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = Path(__file__).resolve().parent.parent
        self.work = Path(args.work).resolve()
        self.bin = Path(args.binary).resolve()
        self.perf = Path(args.perf).resolve()
        self.py = sys.executable
        self.peer = self.root / "scripts" / "bench_peer.py"
        self.results = {}
        self.run_id = str(int(time.time()))

    def log(self, msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def tool(self, *argv, check=True):
        return perf_tool(self.perf, *argv, check=check)

    # ---- data, configs and stored models -------------------------------------------------
    def config(self, width, store, extra=""):
        names = ", ".join(f'"f{j:03}"' for j in range(width))
        path = self.work / f"bench{width}{'-' + extra if extra else ''}.toml"
        path.write_text(f"""[input]
features = [{names}]
key_field = "host"
timestamp_field = "ts"
[model]
kind = "dense"
hidden = {hidden(width)}
epochs = 5
min_steps = 0
threads = 1
store_dir = "{store}"
[threshold]
kind = "quantile"
""")
        return path

    def prepare(self):
        self.work.mkdir(parents=True, exist_ok=True)
        self.stores = {}
        for w in WIDTHS:
            data = self.work / f"hot{w}.jsonl"
            if not data.exists():
                self.tool("gen", "--records", self.args.hot_records, "--features", w, "--out", data)
            train = self.work / f"train{w}.jsonl"
            self.tool("gen", "--records", 20000, "--features", w, "--out", train)
            store = self.work / f"store{w}"
            shutil.rmtree(store, ignore_errors=True)
            cfg = self.config(w, store)
            subprocess.run([self.bin, "--config", cfg, "train", "-i", train, "--model-out", store],
                           check=True, capture_output=True)
            self.stores[w] = (cfg, store)

    # ---- hot path --------------------------------------------------------------------------
    def hot_path(self):
        self.log("hot path: anomalyd score vs the Python loop, one core")
        rows = []
        for w in WIDTHS:
            cfg, _ = self.stores[w]
            data = self.work / f"hot{w}.jsonl"
            out = self.work / f"hot{w}.out"
            ours, theirs = [], []
            for _ in range(self.args.repeat):
                r = subprocess.run(["taskset", "-c", "0", self.bin, "--config", cfg, "score",
                                    "-i", data, "-o", out], capture_output=True, text=True,
                                   env=dict(os.environ, RUST_LOG="warn"))
                m = re.search(r"\(([0-9.]+) records/s\)", r.stderr)
                if r.returncode != 0 or not m:
                    sys.exit(f"anomalyd score failed: {r.stderr[-2000:]}")
                ours.append(float(m.group(1)))
                r = subprocess.run(["taskset", "-c", "0", self.py, self.peer, "hot",
                                    "--features", str(w), "--input", data, "--output", out,
                                    "--hidden", ",".join(map(str, hidden(w)))],
                                   capture_output=True, text=True, check=True)
                theirs.append(json.loads(r.stdout)["rate"])
            rows.append({"features": w, "anomalyd": max(ours), "python": max(theirs),
                         "runs_anomalyd": ours, "runs_python": theirs})
            self.log(f"  {w} features: anomalyd {max(ours):,.0f}/s, python {max(theirs):,.0f}/s")
        self.results["hot"] = rows

    def profile(self):
        """`perf record` of the 32-feature hot path: where the time goes."""
        if not shutil.which("perf") or self.args.no_profile:
            return
        cfg, _ = self.stores[32]
        data = self.work / "perf.data"
        r = subprocess.run(["perf", "record", "-F", "999", "-o", data, "--", "taskset", "-c",
                            "0", self.bin, "--config", cfg, "score", "-i",
                            self.work / "hot32.jsonl", "-o", self.work / "hot32.out"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.log(f"  perf record failed (skipped): {r.stderr[-300:]}")
            return
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym",
                              "--stdio"], capture_output=True, text=True).stdout
        top = []
        for line in rep.splitlines():
            m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
            if m:
                top.append((float(m.group(1)), m.group(2), m.group(3).strip()[:90]))
        self.results["profile"] = top[:15]

    # ---- kernel ----------------------------------------------------------------------------
    def kernel(self):
        self.log("kernel: tch vs PyTorch, one thread")
        _, store = self.stores[32]
        ours = self.tool("kernel", "--store", store)
        r = subprocess.run([self.py, self.peer, "kernel", "--features", "32"],
                           capture_output=True, text=True, check=True)
        self.results["kernel"] = {"anomalyd": ours, "pytorch": json.loads(r.stdout)}

    # ---- brokers ---------------------------------------------------------------------------
    def broker(self, name, folder, port):
        script = self.root / "scripts" / "test-broker.sh"
        subprocess.run([script, "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        topics = " ".join(f"{t}:4" for t in ["in", "echo", "py", "scores", "alerts", "dlq",
                                              "lat-in", "lat-echo-in", "lat-echo", "lat-scores", "lat-alerts",
                                              "lat-dlq", "keys-in", "keys-scores",
                                              "keys-alerts", "keys-dlq"])
        subprocess.run([script, "start", folder], check=True, capture_output=True,
                       env=dict(os.environ, PORT=str(port), TOPICS=topics))
        return f"127.0.0.1:{port}"

    def stop_broker(self, folder):
        subprocess.run([self.root / "scripts" / "test-broker.sh", "stop", folder],
                       capture_output=True)

    def daemon(self, brokers, cfg, prefix, group, http, store, extra_env=None):
        topics = {"metrics": f"{prefix}in", "scores": f"{prefix}scores",
                  "alerts": f"{prefix}alerts", "dlq": f"{prefix}dlq"}
        env = daemon_env(brokers, group, topics, http)
        env.update(RUST_LOG="warn", ANOMALYD__MODEL__STORE_DIR=str(store),
                   **(extra_env or {}))
        log = open(self.work / f"daemon-{group}.log", "w")
        return subprocess.Popen([self.bin, "run", "--config", cfg], env=env, stdout=log,
                                stderr=subprocess.STDOUT)

    @staticmethod
    def peak_rss_mb(proc):
        try:
            text = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"VmHWM:\s+(\d+) kB", text)
        return int(m.group(1)) / 1024 if m else None

    def stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def fresh_store(self, width, name):
        _, store = self.stores[width]
        dst = self.work / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(store, dst)
        return dst

    def end_to_end(self, label, brokers):
        n = self.args.e2e_records
        self.log(f"end to end through {label}: {n} records of 32 features, 4 partitions")
        data = self.work / "e2e32.jsonl"
        if not data.exists():
            self.tool("gen", "--records", n, "--features", 32, "--out", data)
        res = broker_rates(self.perf, brokers, data, n, self.run_id)
        cfg, _ = self.stores[32]
        store = self.fresh_store(32, f"e2e-store-{label}")
        d = self.daemon(brokers, cfg, "", f"anomalyd-{self.run_id}", "127.0.0.1:9477", store)
        res["anomalyd"] = self.tool("watch", "--brokers", brokers, "--topic", "scores",
                                    "--records", n)["rate"]
        res["rss_mb"] = self.peak_rss_mb(d)
        self.stop(d)
        peer = subprocess.Popen([self.py, self.peer, "kafka", "--features", "32",
                                 "--brokers", brokers, "--group", f"py-{self.run_id}",
                                 "--input", "in", "--output", "py", "--records", str(n)],
                                stdout=subprocess.DEVNULL)
        res["python"] = self.tool("watch", "--brokers", brokers, "--topic", "py",
                                  "--records", n)["rate"]
        peer.wait()
        for k in ("raw", "echo", "anomalyd", "python"):
            self.log(f"  {k}: {res[k]:,.0f}/s")
        return res

    def mock(self):
        """librdkafka's MockCluster as the fast broker: produce, then a group reads."""
        n = self.args.e2e_records
        self.log(f"MockCluster: {n} records produced, then read by a consumer group")
        data = self.work / "mock.jsonl"
        self.tool("gen", "--records", n, "--features", 32, "--out", data)
        mock = subprocess.Popen([self.perf, "mock", "--topic", "in:4"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            brokers = json.loads(mock.stdout.readline())["bootstrap"]
            produced = self.tool("produce", "--brokers", brokers, "--topic", "in", "--file", data)
            got = self.tool("consume", "--brokers", brokers, "--topic", "in", "--group",
                            f"mock-{self.run_id}", "--records", n, "--timeout-s", 30)
        finally:
            mock.stdin.close()
            mock.wait()
        self.log(f"  produce {produced['rate']:,.0f}/s; consumed {got['records']} in "
                 f"{got['since_start']:.0f} s")
        return {"records": n, "produce": produced["rate"], "consumed": got["records"],
                "seconds": got["since_start"], "rate": got["records"] / got["since_start"]}

    def latency(self, label, brokers):
        """Steady rates through the echo loop, then through the daemon, one at a time (each
        with its own input topic, joined before the first counted record)."""
        self.log(f"latency through {label}")
        res = {rate: {} for rate in self.args.latency_rates}
        echo = subprocess.Popen([self.perf, "echo", "--brokers", brokers, "--in",
                                 "lat-echo-in", "--out", "lat-echo", "--group",
                                 f"lat-echo-{self.run_id}"], stdout=subprocess.DEVNULL)
        time.sleep(5)
        for rate in self.args.latency_rates:
            res[rate]["echo"] = self.tool("latency", "--brokers", brokers, "--in",
                                          "lat-echo-in", "--out", "lat-echo", "--rate", rate,
                                          "--field", "ts", "--seconds",
                                          self.args.latency_seconds)
        echo.kill()
        echo.wait()
        cfg, _ = self.stores[32]
        store = self.fresh_store(32, f"lat-store-{label}")
        d = self.daemon(brokers, cfg, "lat-", f"lat-anomalyd-{self.run_id}",
                        "127.0.0.1:9478", store,
                        {"ANOMALYD__PIPELINE__LINGER": self.args.daemon_linger})
        deadline = time.time() + 60
        while time.time() < deadline:
            if metric("http://127.0.0.1:9478/metrics", "anomalyd_ready") == 1.0:
                break
            time.sleep(0.5)
        time.sleep(3)
        for rate in self.args.latency_rates:
            res[rate]["anomalyd"] = self.tool("latency", "--brokers", brokers, "--in", "lat-in",
                                              "--out", "lat-scores", "--rate", rate,
                                              "--field", "timestamp", "--seconds",
                                              self.args.latency_seconds)
        self.stop(d)
        for rate, row in res.items():
            self.log(f"  {rate}/s: echo p50 {row['echo']['p50_ms']:.1f} p99 "
                     f"{row['echo']['p99_ms']:.1f} ms; anomalyd p50 "
                     f"{row['anomalyd']['p50_ms']:.1f} p99 {row['anomalyd']['p99_ms']:.1f} ms")
        return res

    def keyed_memory(self, brokers):
        """Window mode with many keys: the daemon's peak RSS holding per-key state."""
        keys, per_key = self.args.keys, self.args.records_per_key
        self.log(f"memory: window mode, {keys} keys x {per_key} records")
        data = self.work / f"keys{keys}.jsonl"
        self.tool("gen", "--records", keys * per_key, "--features", 1, "--keys", keys,
                  "--out", data)
        produced = self.tool("produce", "--brokers", brokers, "--topic", "keys-in",
                             "--file", data)
        cfg = self.work / "keys.toml"
        cfg.write_text('[input]\nmode = "window"\nfeatures = ["f000"]\nkey_field = "host"\n'
                       'timestamp_field = "ts"\n')
        store = self.work / "keys-store"
        shutil.rmtree(store, ignore_errors=True)
        d = self.daemon(brokers, cfg, "keys-", f"keys-{self.run_id}", "127.0.0.1:9479", store)
        deadline = time.time() + 600
        # Every record past each key's first window (size 32) is scored.
        expected = keys * max(per_key - 31, 0)
        scored = 0
        while time.time() < deadline and scored < expected and d.poll() is None:
            time.sleep(1)
            scored = int(metric("http://127.0.0.1:9479/metrics",
                                "anomalyd_records_scored_total") or 0)
        rss = self.peak_rss_mb(d)
        self.stop(d)
        return {"keys": keys, "records": produced["records"], "scored": scored,
                "expected": expected, "rss_mb": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--perf", required=True, help="the perf example binary")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True, help="docs/performance.md")
    ap.add_argument("--hot-records", type=int, default=300_000)
    ap.add_argument("--e2e-records", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--latency-rates", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--latency-seconds", type=int, default=15)
    ap.add_argument("--daemon-linger", default="5ms")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--records-per-key", type=int, default=40)
    ap.add_argument("--disk-port", type=int, default=19310)
    ap.add_argument("--tmpfs-port", type=int, default=19311)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report from WORK/results.json (no measuring)")
    args = ap.parse_args()
    b = Bench(args)
    if args.report_only:
        import bench_report
        results = json.loads((b.work / "results.json").read_text())
        bench_report.write(results, Path(args.out), b.root, b.bin, b.py)
        return
    started = time.time()
    b.prepare()
    b.hot_path()
    b.profile()
    b.kernel()
    b.results["mock"] = b.mock()
    brokers = {"Tansu, SQLite on disk": (b.work / "broker-disk", args.disk_port),
               "Tansu, SQLite on tmpfs": (Path("/dev/shm") / f"anomalyd-bench-{os.getuid()}",
                                          args.tmpfs_port)}
    b.results["e2e"], b.results["latency"] = {}, {}
    for label, (folder, port) in brokers.items():
        addr = b.broker(label, folder, port)
        try:
            b.results["e2e"][label] = b.end_to_end(label, addr)
            b.results["latency"][label] = b.latency(label, addr)
            if "tmpfs" in label:
                b.results["keys"] = b.keyed_memory(addr)
        finally:
            b.stop_broker(folder)
            if str(folder).startswith("/dev/shm"):
                shutil.rmtree(folder, ignore_errors=True)  # tmpfs is memory
    b.results["seconds"] = time.time() - started
    (b.work / "results.json").write_text(json.dumps(b.results, indent=1))
    import bench_report
    bench_report.write(b.results, Path(args.out), b.root, b.bin, b.py)
    b.log(f"wrote {args.out} in {b.results['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
