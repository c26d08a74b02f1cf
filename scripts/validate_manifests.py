"""Validates rendered Kubernetes manifests (run by scripts/check-deploy.sh in its venv).

  validate_manifests.py --kubernetes-version 1.33 --schemas deploy/kubernetes/schemas \
      --label single rendered.yaml

Each document is checked against
  - the Kubernetes API schema of that version (PyPI kubernetes-validate, strict: unknown fields
    are errors), or, for custom resources, a JSON schema shipped in --schemas named
    <kind>-<group>-<version>.json (lower-case kind); a custom resource without one fails;
  - anomalyd's own rules for its workloads: probes on /healthz and /readyz through the port
    named `metrics` (9464), resources, a non-root read-only hardened container, a termination
    grace period above the configured pipeline.drain_timeout, `--config` pointing at the
    mounted ConfigMap, and one replica with a persistent model store for the trainer;
  - with --anomalyd BIN: `BIN check-config` on each workload's configuration as its pod sees
    it (the ConfigMap's file plus the container's ANOMALYD__* environment).
Prints one line per check (OK/FAIL); exits 1 if any failed. The caller counts the lines.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def seconds(d):
    m = DURATION.match(d)
    if not m or not d:
        raise ValueError(f"cannot read duration {d!r}")
    h, mi, s, ms = (int(x or 0) for x in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def drain_timeout(docs, configmap_name):
    """pipeline.drain_timeout of the config file in the named ConfigMap, else the default."""
    default = tomllib.loads((ROOT / "config/default.toml").read_text())["pipeline"]["drain_timeout"]
    for d in docs:
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == configmap_name:
            for text in d.get("data", {}).values():
                cfg = tomllib.loads(text)
                return seconds(cfg.get("pipeline", {}).get("drain_timeout", default))
    return seconds(default)


def pod_config(doc, docs):
    """(config file text or None, ANOMALYD_* env) of the daemon container of a Deployment."""
    pod = doc["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "anomalyd")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    args = c.get("command", []) + c.get("args", [])
    text = None
    if "--config" in args:
        path = args[args.index("--config") + 1]
        for m in c.get("volumeMounts", []):
            cm = volumes.get(m["name"], {}).get("configMap")
            if cm and path.startswith(m["mountPath"].rstrip("/") + "/"):
                key = path[len(m["mountPath"].rstrip("/")) + 1:]
                for d in docs:
                    if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == cm["name"]:
                        text = d.get("data", {}).get(key)
    env = {}
    limits = c.get("resources", {}).get("limits", {})
    for e in c.get("env", []):
        if not e["name"].startswith("ANOMALYD"):
            continue
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("resourceFieldRef", {}).get("resource") == "limits.cpu":
            cpu = str(limits.get("cpu", "1"))
            env[e["name"]] = str(math.ceil(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)))
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            # The pod's name, as Kubernetes fills it in.
            env[e["name"]] = doc["metadata"]["name"] + "-7d9f8c6b5-x2x4z"
    return text, env


def check_config(binary, doc, docs):
    """Runs `binary check-config` on the workload's configuration; returns a problem or None."""
    text, env = pod_config(doc, docs)
    if text is None:
        return "its --config file is not in a ConfigMap of the rendered manifests"
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALYD")}
        r = subprocess.run([binary, "check-config", "--config", f.name], env={**clean, **env},
                           capture_output=True, text=True)
    if r.returncode != 0:
        return f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
    return None


def workload_problems(doc, docs):
    """anomalyd's rules for a Deployment running the daemon."""
    problems = []
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    name = doc["metadata"]["name"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    containers = [c for c in pod["containers"] if c["name"] == "anomalyd"]
    if len(containers) != 1:
        return problems + ["no container named anomalyd"]
    c = containers[0]
    ports = {p.get("name"): p for p in c.get("ports", [])}
    if ports.get("metrics", {}).get("containerPort") != 9464:
        problems.append("no container port named metrics on 9464")
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "metrics":
            problems.append(f"{probe} is not GET {path} on port metrics")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(kind, {})):
            problems.append(f"resources.{kind} lacks cpu or memory")
    csc = c.get("securityContext", {})
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities do not drop ALL")
    # --config FILE must be a file of the mounted ConfigMap.
    args = c.get("command", []) + c.get("args", [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else None
    cfg_mount = next((m for m in c.get("volumeMounts", [])
                      if cfg_path and cfg_path.startswith(m["mountPath"].rstrip("/") + "/")
                      and "configMap" in volumes.get(m["name"], {})), None)
    if cfg_mount is None:
        problems.append(f"--config {cfg_path} is not in a mounted ConfigMap")
        grace_floor = drain_timeout(docs, "")
    else:
        grace_floor = drain_timeout(docs, volumes[cfg_mount["name"]]["configMap"]["name"])
    env = {e["name"]: e for e in c.get("env", [])}
    if "value" in env.get("ANOMALYD__PIPELINE__DRAIN_TIMEOUT", {}):
        grace_floor = seconds(env["ANOMALYD__PIPELINE__DRAIN_TIMEOUT"]["value"])
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > grace_floor:
        problems.append(f"terminationGracePeriodSeconds {grace} is not above the drain timeout {grace_floor:g}s")
    store = env.get("ANOMALYD__MODEL__STORE_DIR", {}).get("value")
    if store:
        mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == store), None)
        if mount is None or "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
            problems.append(f"model store {store} is not a mounted PersistentVolumeClaim")
        elif spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
            problems.append("a Deployment with the model store needs replicas 1 and strategy Recreate")
    if name.endswith("trainer") and not store:
        problems.append("the trainer has no ANOMALYD__MODEL__STORE_DIR")
    for m in c.get("volumeMounts", []):
        if m["name"] not in volumes:
            problems.append(f"volumeMount {m['name']} has no volume")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--anomalyd", help="binary for `check-config` on each workload's configuration")
    ap.add_argument("file")
    args = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(Path(args.file).read_text()) if d]
    schemas = {p.stem: json.loads(p.read_text()) for p in Path(args.schemas).glob("*.json")}
    failed = 0
    prefix = f"{args.label}: " if args.label else ""

    def report(ok, what, detail=""):
        nonlocal failed
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {prefix}{what}" + (f"  -- {detail}" if detail else ""))

    for d in docs:
        what = f"{d.get('kind')}/{d.get('metadata', {}).get('name')} ({d.get('apiVersion')})"
        group, _, version = d.get("apiVersion", "").rpartition("/")
        key = f"{d.get('kind', '').lower()}-{group}-{version}"
        if key in schemas:
            errors = sorted(jsonschema.Draft7Validator(schemas[key]).iter_errors(d), key=lambda e: list(e.path))
            detail = "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:3])
            report(not errors, f"{what} against shipped schema {key}.json", detail)
        else:
            try:
                kubernetes_validate.validate(d, args.kubernetes_version, strict=True)
                report(True, f"{what} against Kubernetes {args.kubernetes_version} (strict)")
            except kubernetes_validate.SchemaNotFoundError:
                report(False, what, f"no Kubernetes {args.kubernetes_version} schema and no {key}.json in {args.schemas}")
            except kubernetes_validate.ValidationError as e:
                report(False, f"{what} against Kubernetes {args.kubernetes_version} (strict)",
                       f"{'/'.join(map(str, e.path))}: {e.message}")
        if d.get("kind") == "Deployment":
            problems = workload_problems(d, docs)
            report(not problems, f"{what} anomalyd workload rules", "; ".join(problems))
            if args.anomalyd:
                problem = check_config(args.anomalyd, d, docs)
                report(problem is None, f"{what} `anomalyd check-config` with its ConfigMap and env", problem or "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
