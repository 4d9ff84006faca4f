"""Fixtures of the chart tests: find helm 3 and helm 4, render the chart.

helm comes from .tools/go/helm3 and .tools/go/helm4 (built from source by
scripts/build-go-tools.sh, which scripts/install-tools.sh runs) or, for the
major version it has, from `helm` on PATH. Every test that renders
runs once per helm found; the session fails when neither is there.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "election"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BAD_VALUES = sorted((CHART / "ci" / "bad").glob("*.yaml"))
RELEASE = "election"
NAMESPACE = "election"


def _helm_version(path: str) -> str:
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


@functools.cache
def find_helms() -> dict[str, str]:
    """Maps "helm3"/"helm4" to an executable of that major version."""
    found: dict[str, str] = {}
    on_path = shutil.which("helm")
    for major in ("3", "4"):
        local = ROOT / ".tools" / "go" / f"helm{major}" / "helm"
        if os.access(local, os.X_OK):
            found[f"helm{major}"] = str(local)
        elif on_path and _helm_version(on_path).startswith(f"v{major}."):
            found[f"helm{major}"] = on_path
    return found


def find_kubectl() -> str | None:
    """kubectl built by scripts/build-go-tools.sh when there, else any."""
    candidate = ROOT / ".tools/go/kubernetes/kubectl"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("kubectl")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not find_helms():
        raise pytest.UsageError("no helm found: run scripts/install-tools.sh (or put helm on PATH)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "helm" in metafunc.fixturenames:
        params = [
            pytest.param(name, marks=() if name in find_helms() else pytest.mark.skip(reason=f"{name} not installed"))
            for name in ("helm3", "helm4")
        ]
        metafunc.parametrize("helm", params)


# What a Kubernetes >= 1.30 API server offers: the chart then ships its
# ValidatingAdmissionPolicy (helm template alone does not announce it).
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"


class RenderError(Exception):
    """helm template failed; the message is helm's output."""


@functools.cache
def _render(
    helm: str, values: tuple[str, ...], sets: tuple[str, ...], skip_tests: bool, api_versions: tuple[str, ...] = ()
) -> str:
    cmd = [find_helms()[helm], "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for a in api_versions:
        cmd += ["--api-versions", a]
    for v in values:
        cmd += ["--values", v]
    for s in sets:
        cmd += ["--set", s]
    if skip_tests:
        cmd.append("--skip-tests")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RenderError(out.stderr + out.stdout)
    return out.stdout


def render_text(
    helm: str,
    *values: str | Path,
    sets: tuple[str, ...] = (),
    skip_tests: bool = False,
    api_versions: tuple[str, ...] = (),
) -> str:
    return _render(helm, tuple(str(v) for v in values), tuple(sets), skip_tests, tuple(api_versions))


def render(
    helm: str,
    *values: str | Path,
    sets: tuple[str, ...] = (),
    skip_tests: bool = False,
    api_versions: tuple[str, ...] = (),
) -> list[dict]:
    """The rendered documents (empty ones dropped)."""
    text = render_text(helm, *values, sets=sets, skip_tests=skip_tests, api_versions=api_versions)
    return [d for d in yaml.safe_load_all(text) if d]


class Manifests:
    """Query helpers over one rendering."""

    def __init__(self, docs: list[dict]):
        self.docs = docs

    def all(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def hooks(self) -> list[dict]:
        return [d for d in self.docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]

    def non_hooks(self) -> list[dict]:
        return [d for d in self.docs if "helm.sh/hook" not in d["metadata"].get("annotations", {})]

    def by_component(self, kind: str, component: str) -> dict:
        found = [
            d
            for d in self.non_hooks()
            if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} of component {component}, found {len(found)}"
        return found[0]

    @property
    def election(self) -> dict:
        return self.by_component("StatefulSet", "election")

    @property
    def zookeeper(self) -> dict:
        return self.by_component("StatefulSet", "zookeeper")

    def pod_specs(self) -> list[tuple[str, dict]]:
        """(name, pod spec) of every workload, hooks included."""
        specs = []
        for d in self.docs:
            if d["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
                specs.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
            elif d["kind"] == "Pod":
                specs.append((d["metadata"]["name"], d["spec"]))
        return specs


def container(workload: dict, name: str) -> dict:
    spec = workload["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == name]
    return found


def env_of(c: dict) -> dict[str, dict]:
    """Env entries by name (the whole EnvVar, to see value or valueFrom)."""
    return {e["name"]: e for e in c.get("env", [])}


def env_values(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


_MS = {
    **dict.fromkeys(["ns", "nsec", "us", "usec"], 0),
    **dict.fromkeys(["ms", "msec"], 1),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], 1000),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], 60_000),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], 3_600_000),
    **dict.fromkeys(["d", "day", "days"], 86_400_000),
}


def duration_ms(text: str) -> int:
    """A humantime duration in milliseconds (the forms the schema allows)."""
    parts = re.findall(r"([0-9]+)\s*([a-z]+)", text)
    assert parts and re.fullmatch(r"(\s*[0-9]+\s*[a-z]+)+\s*", text), f"not a duration: {text!r}"
    return sum(int(n) * _MS[unit] for n, unit in parts)


@pytest.fixture
def manifests():
    """manifests(helm, *values, sets=...) -> Manifests."""

    def make(helm: str, *values: str | Path, sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = ()) -> Manifests:
        return Manifests(render(helm, *values, sets=sets, api_versions=api_versions))

    return make


def render_notes(*sets: str) -> str:
    """NOTES.txt as `helm install --dry-run=client` prints it, with `--set` values."""
    helm = find_helms().get("helm4")
    if not helm:
        pytest.skip("helm 3 needs a cluster for `install --dry-run`")
    cmd = [helm, "install", "election", str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    return out.stdout.split("NOTES:", 1)[1]
