#!/usr/bin/env python3
"""Make the tiny TorchScript autoencoder fixture used by anomalyd's tch tests.

Writes, into tests/fixtures/torchscript/ (or --out-dir):
  ae8.pt          TorchScript module (torch.jit.script), about 13 KB
  ae8_check.json  4 standardized input rows and the module's outputs for them
  README.md       what the module is, its contract, how it was made, its SHA-256

The module is an autoencoder for 8 features:
  Linear(8,16)-Tanh-Linear(16,3)-Tanh-Linear(3,16)-Tanh-Linear(16,8)
It expects STANDARDIZED inputs (each feature: zero mean, unit std, using the
statistics of the training data, recorded in ae8_check.json), float32, shape
[batch, 8], and returns the reconstruction, float32, shape [batch, 8].
Anomaly score = mean squared error between input and reconstruction.

Everything is deterministic: fixed seed, single thread, deterministic
algorithms, synthetic data computed with plain Python math (no numpy), and
PYTHONHASHSEED=0 (the script re-executes itself with it), so reruns with the
same torch version write a byte-identical ae8.pt.

Usage (needs torch; the fixture was made with torch 2.11.0 on CPU):
  python scripts/make-torchscript-fixture.py
"""
import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

# TorchScript writes module constants (e.g. Linear's in_features/out_features)
# in Python set order, which depends on string hash randomization; pin it so
# the saved file is byte-for-byte reproducible.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "torchscript"

SEED = 20240611
N_FEATURES = 8
N_ROWS = 512
STEPS = 400
LR = 1e-2


class AE8(nn.Module):
    """8 -> 16 -> 3 -> 16 -> 8 tanh autoencoder; input must be standardized."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3), nn.Tanh()
        )
        self.decoder = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def raw_row(i: int):
    """One "normal" row: near a 2-D plane in 8-D, plus small deterministic noise."""
    a = math.sin(0.37 * i)
    b = math.cos(0.11 * i)
    return [
        a * (j + 1) * 0.3 + b * (N_FEATURES - j) * 0.2 + 0.02 * math.sin(1.3 * i + 2.1 * j + 0.5)
        for j in range(N_FEATURES)
    ]


def column_stats(rows):
    n = len(rows)
    means = [sum(r[j] for r in rows) / n for j in range(N_FEATURES)]
    stds = [
        math.sqrt(sum((r[j] - means[j]) ** 2 for r in rows) / n) for j in range(N_FEATURES)
    ]
    return means, stds


def standardize(rows, means, stds):
    return [[(r[j] - means[j]) / stds[j] for j in range(N_FEATURES)] for r in rows]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    raw = [raw_row(i) for i in range(N_ROWS)]
    means, stds = column_stats(raw)
    x = torch.tensor(standardize(raw, means, stds), dtype=torch.float32)

    model = AE8().float()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.MSELoss()
    first_loss = None
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(model(x), x)
        loss.backward()
        opt.step()
        if first_loss is None:
            first_loss = loss.item()
    model.eval()
    with torch.no_grad():
        final_loss = loss_fn(model(x), x).item()
    print(f"train MSE: first step {first_loss:.6f}, after {STEPS} steps {final_loss:.6f}")

    scripted = torch.jit.script(model)
    pt_path = out / "ae8.pt"
    torch.jit.save(scripted, str(pt_path))

    # Check rows: three normal rows (standardized with the training stats; rows
    # 1000+ are past the training range) and one off-plane anomalous row.
    check_raw = [raw_row(1000), raw_row(1001), raw_row(1234)]
    check_std = standardize(check_raw, means, stds)
    check_std.append([2.0, -2.0, 2.0, -2.0, 2.0, -2.0, 2.0, -2.0])
    check_x = torch.tensor(check_std, dtype=torch.float32)

    # Verify: load back the saved file and compare with the in-memory model.
    loaded = torch.jit.load(str(pt_path), map_location="cpu")
    loaded.eval()
    with torch.no_grad():
        y_ref = model(check_x)
        y = loaded(check_x)
    max_diff = (y - y_ref).abs().max().item()
    print(f"reloaded vs in-memory max |diff|: {max_diff:.3e}")
    if not torch.allclose(y, y_ref, rtol=0, atol=1e-6):
        print("FAIL: reloaded module does not reproduce outputs", file=sys.stderr)
        return 1
    mse = ((y - check_x) ** 2).mean(dim=1)
    print("check-row reconstruction MSE:", [round(v, 6) for v in mse.tolist()])
    if not (mse[3] > 10 * mse[:3].max()):
        print("FAIL: anomalous row does not stand out", file=sys.stderr)
        return 1

    digest = sha256(pt_path)
    size = pt_path.stat().st_size
    check = {
        "module": "ae8.pt",
        "torch_version": torch.__version__,
        "sha256": digest,
        "dtype": "float32",
        "shape": [len(check_std), N_FEATURES],
        "note": "inputs are STANDARDIZED; outputs = module(inputs); "
        "rows 0-2 normal, row 3 anomalous (off the training plane); "
        "reconstruction_mse = mean over features of (output - input)^2",
        "train_means": means,
        "train_stds": stds,
        "inputs": check_x.tolist(),
        "outputs": y.tolist(),
        "reconstruction_mse": mse.tolist(),
        "tolerance": 1e-5,
    }
    (out / "ae8_check.json").write_text(json.dumps(check, indent=2) + "\n")

    try:
        rel_script = Path(__file__).resolve().relative_to(ROOT)
    except ValueError:
        rel_script = Path(__file__)
    readme = f"""# TorchScript fixture: `ae8.pt`

A tiny autoencoder saved with real PyTorch, for tests that check the daemon
can load a TorchScript module through `tch` and reproduce PyTorch's outputs.
Made by `{rel_script}`; do not edit these files by hand, rerun the script.

## Module

`torch.jit.script` of

```
encoder: Linear(8,16) - Tanh - Linear(16,3) - Tanh
decoder: Linear(3,16) - Tanh - Linear(16,8)
forward(x) = decoder(encoder(x))
```

## Contract

- input: `float32` tensor, shape `[batch, 8]`, **standardized** features
  (each column zero mean, unit std; the training means/stds are in
  `ae8_check.json` as `train_means` / `train_stds`).
- output: `float32` tensor, shape `[batch, 8]`, the reconstruction of the
  (standardized) input.
- anomaly score: mean over the 8 features of `(output - input)^2`.
- CPU; the module holds no device-specific state (load with `map_location` cpu
  or `tch::Device::Cpu`, or move it to CUDA).

## Training data

{N_ROWS} deterministic rows near a 2-D plane in 8-D: for row `i` and feature
`j` (0..7), `a = sin(0.37*i)`, `b = cos(0.11*i)`,
`x_j = a*(j+1)*0.3 + b*(8-j)*0.2 + 0.02*sin(1.3*i + 2.1*j + 0.5)`,
then each column standardized to zero mean / unit std (population std).
Adam, lr {LR}, {STEPS} full-batch steps, MSE loss, seed {SEED}, one thread,
deterministic algorithms, PYTHONHASHSEED=0 (reruns with the same torch are
byte-identical). Final training MSE: {final_loss:.6f}.

## Check data: `ae8_check.json`

4 standardized input rows (rows 0-2: normal rows `i = 1000, 1001, 1234`,
outside the training range of `i`; row 3: the off-plane row
`[2,-2,2,-2,2,-2,2,-2]`) with the module's outputs computed by PyTorch from the
saved file, and each row's reconstruction MSE
({", ".join(f"{v:.6f}" for v in mse.tolist())}). A Rust test should load
`ae8.pt`, run `inputs`, and match `outputs` to about 1e-5 (absolute).

## Provenance

- torch version: `{torch.__version__}` (PyPI wheel, run on CPU)
- python: `{sys.version.split()[0]}`
- command (from the repository root, in a venv with `pip install torch==2.11.0`):
  `python {rel_script}`
- `ae8.pt` size: {size} bytes
- `ae8.pt` SHA-256: `{digest}`
"""
    (out / "README.md").write_text(readme)
    print(f"wrote {pt_path} ({size} bytes, sha256 {digest})")
    print(f"wrote {out / 'ae8_check.json'}")
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
