#!/usr/bin/env python3
"""Turns a Pod object, as the API server holds it, into a local process.

Used by scripts/e2e-k8s.sh, which plays the kubelet for the pods that kwok
only pretends to run. Reads the pod (`kubectl get pod -o json`) and prints
a JSON plan:

  {"argv": [...], "env": {...}, "prestop": [...], "mappings": ["..."]}

- argv: the container's command (else the image's ENTRYPOINT, which must be
  given with --entrypoint) and args, with the image's binary mapped to the
  local one (--binary).
- env: exactly what the kubelet would give the container: `value`s, and
  `valueFrom` resolved from the pod itself (fieldRef) or from the API
  (secretKeyRef, configMapKeyRef, through --kubectl), plus HOSTNAME (the
  pod's host name, as the container runtime sets it). Then the mappings
  for what cannot exist here, each one also described in "mappings":
  --map-host NAME=ADDR  a host:port in an env value whose first DNS label is
                        NAME (a pod behind a headless Service) -> ADDR
  --map-listen PORT=NEW a listen address on PORT (`0.0.0.0:PORT`, `[::]:PORT`,
                        `127.0.0.1:PORT`, `:PORT`...) in an env value or an
                        argument -> NEW
  --map-dir PATH=DIR    an env value equal to a volume's mountPath, or a
                        path under it -> DIR (the same path under DIR)
  --secrets-dir DIR     the container's `secret` volumes, written from the
                        API into DIR/<volume> (its items, its defaultMode)
                        and mapped as --map-dir
  --empty-dirs DIR      the container's `emptyDir` volumes, each
                        DIR/<pod uid>/<volume> (created; kept while the pod
                        lives, across restarts of its process, like the
                        kubelet's) and mapped as --map-dir
  `$(VAR)` in a value expands to an earlier variable, as the kubelet does.
- prestop: the preStop exec command, mapped the same way.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys


def field_ref(pod, path):
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs", [])),
    }
    if path in simple:
        return simple[path]
    for prefix, key in (("metadata.labels['", "labels"), ("metadata.annotations['", "annotations")):
        if path.startswith(prefix) and path.endswith("']"):
            return meta.get(key, {}).get(path[len(prefix) : -2], "")
    raise SystemExit(f"unsupported fieldRef {path}")


def from_api(kubectl, kind, namespace, name, key, decode):
    out = subprocess.run(
        kubectl + ["get", kind, name, "--namespace", namespace, "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    value = json.loads(out).get("data", {})[key]
    return base64.b64decode(value).decode() if decode else value


def write_secret_volumes(kubectl, pod, c, root, mappings):
    """Writes the container's secret volumes under root; returns {mountPath: dir}."""
    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    dirs = {}
    for m in c.get("volumeMounts", []):
        src = volumes.get(m["name"], {}).get("secret")
        if src is None:
            continue
        out = subprocess.run(
            kubectl + ["get", "secret", src["secretName"], "--namespace", ns, "-o", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        data = json.loads(out).get("data", {})
        items = src.get("items") or [{"key": k, "path": k} for k in data]
        mode = src.get("defaultMode", 0o644)
        d = os.path.join(root, m["name"])
        os.makedirs(d, exist_ok=True)
        for item in items:
            path = os.path.join(d, item["path"])
            if os.path.exists(path):  # read-only from an earlier start
                os.remove(path)
            with open(path, "wb") as f:
                f.write(base64.b64decode(data[item["key"]]))
            os.chmod(path, item.get("mode", mode) & 0o777)
        dirs[m["mountPath"]] = d
        keys = ", ".join(f"{i['key']} -> {i['path']}" for i in items)
        mappings.append(f"pod {name}: secret volume {m['name']} (Secret {src['secretName']}: {keys}, mode {mode:o}) at {m['mountPath']} -> {d}")
    return dirs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pod-json", required=True)
    p.add_argument("--container", default=None)
    p.add_argument("--entrypoint", default="")
    p.add_argument("--binary", required=True, help="IMAGE_PATH=LOCAL_PATH")
    p.add_argument("--kubectl", required=True, help="kubectl command line, space separated")
    p.add_argument("--map-host", action="append", default=[])
    p.add_argument("--map-listen", action="append", default=[])
    p.add_argument("--map-dir", action="append", default=[])
    p.add_argument("--secrets-dir", default=None)
    p.add_argument("--empty-dirs", default=None)
    a = p.parse_args()

    pod = json.load(open(a.pod_json))
    name = pod["metadata"]["name"]
    ns = pod["metadata"]["namespace"]
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    c = next(c for c in containers if a.container in (None, c["name"]))
    kubectl = a.kubectl.split()
    image_bin, local_bin = a.binary.split("=", 1)
    hosts = dict(m.split("=", 1) for m in a.map_host)
    listen = dict(m.split("=", 1) for m in a.map_listen)

    def listen_addr(value):
        host, sep, port = value.rpartition(":")
        if sep and port in listen and host in ("", "0.0.0.0", "[::]", "::", "127.0.0.1", "[::1]", "localhost"):
            return listen[port]
        return None

    dirs = dict(m.split("=", 1) for m in a.map_dir)
    mappings = [f"pod {name}: image {c['image']} cannot be pulled here: runs {local_bin} (built from this checkout)"]
    if a.secrets_dir:
        dirs.update(write_secret_volumes(kubectl, pod, c, a.secrets_dir, mappings))
    if a.empty_dirs:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for m in c.get("volumeMounts", []):
            if "emptyDir" in volumes.get(m["name"], {}):
                d = os.path.join(a.empty_dirs, pod["metadata"]["uid"], m["name"])
                os.makedirs(d, mode=0o700, exist_ok=True)
                dirs[m["mountPath"]] = d
                mappings.append(f"pod {name}: emptyDir {m['name']} at {m['mountPath']} -> {d} (kept while the pod lives)")

    def map_value(var, value):
        mapped = listen_addr(value)
        if mapped:
            mappings.append(f"pod {name}: {var}={value} -> {mapped} (loopback only, free port)")
            return mapped
        for mount, local in dirs.items():
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                mapped = local + value[len(mount.rstrip("/")) :] if value != mount else local
                mappings.append(f"pod {name}: {var}={value} (volume mount) -> {mapped}")
                return mapped
        parts, changed = [], False
        for item in value.split(","):
            host = item.rsplit(":", 1)[0] if ":" in item else ""
            label = host.split(".", 1)[0]
            if host and "." in host and label in hosts:
                parts.append(hosts[label])
                changed = True
            else:
                parts.append(item)
        if changed:
            mapped = ",".join(parts)
            mappings.append(f"pod {name}: {var}={value} -> {mapped} (cluster DNS names of pods -> their local processes)")
            return mapped
        return value

    env = {"HOSTNAME": pod["spec"].get("hostname") or name}
    for e in c.get("env", []):
        if "value" in e:
            value = e["value"]
        elif "valueFrom" in e:
            src = e["valueFrom"]
            if "fieldRef" in src:
                value = field_ref(pod, src["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in src:
                r = src["secretKeyRef"]
                value = from_api(kubectl, "secret", ns, r["name"], r["key"], True)
            elif "configMapKeyRef" in src:
                r = src["configMapKeyRef"]
                value = from_api(kubectl, "configmap", ns, r["name"], r["key"], False)
            else:
                raise SystemExit(f"pod {name}: unsupported valueFrom in {e['name']}: {src}")
        else:
            value = ""
        # $(VAR) names an earlier variable ($$ escapes), as the kubelet expands it.
        value = re.sub(
            r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
            lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
            value,
        )
        env[e["name"]] = map_value(e["name"], value)

    def map_argv(argv):
        out = []
        for i, arg in enumerate(argv):
            if i == 0 and arg == image_bin:
                out.append(local_bin)
            else:
                out.append(map_value("argument", arg) if listen_addr(arg) else arg)
        return out

    command = c.get("command") or ([a.entrypoint] if a.entrypoint else [])
    argv = map_argv(command + c.get("args", []))
    prestop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    json.dump(
        {"argv": argv, "env": env, "prestop": map_argv(prestop), "mappings": mappings},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
