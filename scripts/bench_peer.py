"""The Python peers that scripts/bench.py measures anomalyd against: the loop a user would
write instead, with the same work per record.

  hot:   JSON lines from a file -> json.loads -> a torch autoencoder of the same layer sizes
         (batches of --batch rows, one thread) -> per-row MSE of the standardised features ->
         json.dumps of a score message -> a file.
  kernel: the scoring kernel and training alone (against `perf kernel`).
  kafka: the same work between Kafka topics: a confluent-kafka consumer-group member ->
         json -> torch -> produce -> commit every second.

Both print one JSON line: records, seconds (from the first record to the last) and rate.
"""
import argparse
import json
import sys
import time

import torch


def model(dim, hidden):
    sizes = [dim, *hidden]
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    back = list(reversed(sizes))
    for i, (a, b) in enumerate(zip(back, back[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(back) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).eval()


class Scorer:
    """Standardise, reconstruct, per-row mean squared error, encode the score messages."""

    def __init__(self, names, hidden, threshold):
        self.names = names
        self.net = model(len(names), hidden)
        self.center = torch.zeros(len(names))
        self.scale = torch.ones(len(names))
        self.threshold = threshold

    def score(self, records, metas):
        with torch.no_grad():
            x = torch.tensor([[r[n] for n in self.names] for r in records], dtype=torch.float32)
            z = (x - self.center) / self.scale
            err = ((self.net(z) - z) ** 2).mean(dim=1).tolist()
        out = []
        for r, (partition, offset), s in zip(records, metas, err):
            out.append(json.dumps({
                "key": r.get("host"), "partition": partition, "offset": offset,
                "timestamp": r.get("ts"), "score": s, "threshold": self.threshold,
                "normalized_score": s / self.threshold, "is_anomaly": s > self.threshold,
                "model_version": 1}))
        return out


def hot(args, scorer):
    start = None
    n = 0
    with open(args.input) as src, open(args.output, "w") as dst:
        batch, metas = [], []
        for i, line in enumerate(src):
            if start is None:
                start = time.perf_counter()
            batch.append(json.loads(line))
            metas.append((0, i))
            if len(batch) == args.batch:
                dst.write("\n".join(scorer.score(batch, metas)) + "\n")
                n += len(batch)
                batch, metas = [], []
        if batch:
            dst.write("\n".join(scorer.score(batch, metas)) + "\n")
            n += len(batch)
    seconds = time.perf_counter() - start
    return {"records": n, "seconds": seconds, "rate": n / seconds}


def kafka(args, scorer):
    from confluent_kafka import Consumer, Producer

    c = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    p = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5,
                  "queue.buffering.max.messages": 1000000})
    c.subscribe([args.input])
    n = 0
    start = None
    last_commit = time.monotonic()
    while args.records == 0 or n < args.records:
        msgs = [m for m in c.consume(args.batch, 0.1) if not m.error()]
        if msgs:
            start = start or time.perf_counter()
            records = [json.loads(m.value()) for m in msgs]
            out = scorer.score(records, [(m.partition(), m.offset()) for m in msgs])
            for m, value in zip(msgs, out):
                while True:
                    try:
                        p.produce(args.output, value, key=m.key())
                        break
                    except BufferError:
                        p.poll(0.005)
            n += len(msgs)
        p.poll(0)
        if time.monotonic() - last_commit >= 1 and n:
            c.commit(asynchronous=True)
            last_commit = time.monotonic()
    p.flush(60)
    c.commit(asynchronous=False)
    c.close()
    seconds = time.perf_counter() - start
    return {"records": n, "seconds": seconds, "rate": n / seconds}


def kernel(args, scorer):
    """One thread: standardise + forward + per-row MSE on random rows at each batch size, and
    training rows/s (Adam, minibatches of 128, 2 epochs of 16384 rows)."""
    dim = len(scorer.names)
    out = {}
    with torch.no_grad():
        for b in (64, 1024, 4096):
            x = torch.randn(b, dim)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < 2.0:
                z = (x - scorer.center) / scorer.scale
                ((scorer.net(z) - z) ** 2).mean(dim=1).tolist()
                n += b
            out[str(b)] = n / (time.perf_counter() - start)
    net = model(dim, [int(h) for h in args.hidden.split(",")])
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rows, epochs = 16384, 2
    x = torch.randn(rows, dim)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in x[torch.randperm(rows)].split(128):
            opt.zero_grad()
            loss = ((net(batch) - batch) ** 2).mean()
            loss.backward()
            opt.step()
    train = rows * epochs / (time.perf_counter() - start)
    return {"score_rows_per_s": out, "train_rows_per_s": train, "dim": dim}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["hot", "kafka", "kernel"])
    ap.add_argument("--features", type=int, required=True)
    ap.add_argument("--hidden", default="64,16")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threshold", type=float, default=1.0)
    ap.add_argument("--input", help="file (hot) or topic (kafka)")
    ap.add_argument("--output", help="file (hot) or topic (kafka)")
    ap.add_argument("--brokers")
    ap.add_argument("--group")
    ap.add_argument("--records", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [f"f{j:03}" for j in range(args.features)]
    scorer = Scorer(names, [int(h) for h in args.hidden.split(",")], args.threshold)
    result = {"hot": hot, "kafka": kafka, "kernel": kernel}[args.mode](args, scorer)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
