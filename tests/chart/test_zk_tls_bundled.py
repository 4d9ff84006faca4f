"""TLS of the bundled ZooKeeper ensemble, as the chart renders it, on real servers.

The chart's zoo.cfg lines (ZOO_SERVERS and ZOO_CFG_EXTRA) and the key store
assembly in the container's command are taken from the rendering and run with
Debian's ZooKeeper (3.8; the image has 3.9): three servers on loopback, the
official image's entrypoint played by writing zoo.cfg from the ZOO_*
variables. What is mapped, and why: host names to 127.0.0.1 and the fixed
ports to free ones (three servers share one host), the mount paths to a temp
dir, and tickTime to 200 ms (quicker; not under test).

Then: the quorum forms over TLS (sslQuorum), a client with the release's
certificate speaks to every server's TLS port, a client without one is
refused, and the plain port answers on loopback only.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Manifests, find_helms, render
from zk_local import classpath, four_letters, free_port, keystore_lines, make_certs, map_paths, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

TLS_SETS = (
    "zookeeper.tls.enabled=true",
    "zookeeper.tls.secretName=zk-tls",
    "zookeeper.tls.clientCertificate=true",
    "zookeeper.replicas=3",
)


def zk_env(helm: str) -> tuple[dict[str, str], str]:
    """The ZooKeeper container's plain env values and its command script."""
    m = Manifests(render(helm, sets=TLS_SETS))
    sts = m.by_component("StatefulSet", "zookeeper")
    c = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "zookeeper")
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    return env, c["command"][-1]


class Ensemble:
    def __init__(self, tmp: Path, env: dict[str, str], command: str):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        certs = tmp / "zk-tls"
        make_certs(certs)
        servers = env["ZOO_SERVERS"].split()
        n = len(servers)
        self.plain = [free_port() for _ in range(n)]
        self.secure = [free_port() for _ in range(n)]
        peer = [(free_port(), free_port()) for _ in range(n)]
        self.election_ports = [e for _, e in peer]
        lines = []
        for i, line in enumerate(servers):
            # server.<id>=<host>:2888:3888;<client address>:2181
            m = re.fullmatch(r"server\.(\d+)=([^:]+):2888:3888;(?:(127\.0\.0\.1):)?2181", line)
            assert m, f"unexpected ZOO_SERVERS item {line!r}"
            assert m.group(3) == "127.0.0.1", f"with TLS the plain port must listen on loopback only: {line!r}"
            assert int(m.group(1)) == i + 1
            lines.append(f"server.{i + 1}=127.0.0.1:{peer[i][0]}:{peer[i][1]};127.0.0.1:{{plain{i}}}")
        for i in range(n):
            d = tmp / f"zk{i}"
            (d / "data").mkdir(parents=True)
            (d / "data" / "myid").write_text(f"{i + 1}\n")
            keystore = d / "keystore"
            keystore.mkdir()
            # The command's key store line, with the mount paths mapped.
            subprocess.run(["bash", "-ec", keystore_lines(command, certs, keystore)], check=True)
            assert (keystore / "keystore.pem").stat().st_mode & 0o077 == 0, "the key store is private"
            extra = []
            for item in env["ZOO_CFG_EXTRA"].split():
                item = item.replace("secureClientPort=2281", f"secureClientPort={self.secure[i]}")
                item = map_paths(item, certs, keystore)
                extra.append(item)
            cfg = [
                f"dataDir={d / 'data'}",
                "tickTime=200",
                f"initLimit={env['ZOO_INIT_LIMIT']}",
                f"syncLimit={env['ZOO_SYNC_LIMIT']}",
                "admin.enableServer=false",
                f"4lw.commands.whitelist={env['ZOO_4LW_COMMANDS_WHITELIST']}",
                *[l.replace(f"{{plain{j}}}", str(self.plain[j])) for j, l in enumerate(lines)],
                *extra,
            ]
            (d / "zoo.cfg").write_text("\n".join(cfg) + "\n")
            log = open(d / "zookeeper.log", "wb")
            self.procs.append(
                subprocess.Popen(
                    ["java", "-Xmx128m", "-cp", classpath(), "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                     str(d / "zoo.cfg")],
                    stdout=log, stderr=subprocess.STDOUT, cwd=d,
                )
            )

    def logs(self) -> str:
        return "\n".join(
            f"--- zk{i} ---\n" + (self.tmp / f"zk{i}" / "zookeeper.log").read_text(errors="replace")[-3000:]
            for i in range(len(self.procs))
        )

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    helm = sorted(find_helms())[-1]
    env, command = zk_env(helm)
    e = Ensemble(tmp_path_factory.mktemp("zk-tls"), env, command)
    try:
        deadline = time.monotonic() + 90
        modes: list[str] = []
        while time.monotonic() < deadline:
            modes = []
            for port in e.plain:
                try:
                    modes += re.findall(r"^Mode: (\w+)", four_letters(port, b"srvr"), re.M)
                except OSError:
                    pass
            if len(modes) == len(e.plain):
                break
            time.sleep(0.5)
        assert sorted(modes) == ["follower", "follower", "leader"], f"no quorum over TLS: {modes}\n{e.logs()}"
        yield e
    finally:
        e.stop()


def client_context(certs: Path, with_certificate: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if with_certificate:
        ctx.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    return ctx


def test_the_quorum_forms_over_tls_and_every_server_serves_its_tls_port(ensemble):
    ctx = client_context(ensemble.tmp / "zk-tls", with_certificate=True)
    for port in ensemble.secure:
        answer = four_letters(port, b"srvr", ctx)
        assert re.search(r"^Mode: (leader|follower)$", answer, re.M), answer
    # sslQuorum: the servers' election ports complete a TLS handshake with
    # the release's certificate (a plain-text port would not).
    for port in ensemble.election_ports:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_client_without_the_release_certificate_is_refused(ensemble):
    ctx = client_context(ensemble.tmp / "zk-tls", with_certificate=False)
    for port in ensemble.secure:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            answer = four_letters(port, b"srvr", ctx)
            # TLS 1.3 reports a refused client certificate at the first read:
            # an empty answer is a refusal too.
            if not answer:
                raise ConnectionError("closed without an answer")


def test_plain_text_gets_nothing_from_the_tls_port(ensemble):
    for port in ensemble.secure:
        try:
            answer = four_letters(port, b"srvr")
        except OSError:
            answer = ""
        assert "Mode:" not in answer


def test_a_pkcs1_key_stops_the_server_with_a_clear_message(tmp_path):
    helm = sorted(find_helms())[-1]
    _, command = zk_env(helm)
    certs, keystore = tmp_path / "zk-tls", tmp_path / "keystore"
    make_certs(certs)
    keystore.mkdir()
    # cert-manager's default encoding: PKCS#1, which ZooKeeper cannot read.
    subprocess.run(["openssl", "rsa", "-in", "tls.key", "-traditional", "-out", "tls.key"], cwd=certs, check=True,
                   capture_output=True)
    out = subprocess.run(["bash", "-ec", keystore_lines(command, certs, keystore)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "PKCS#8" in out.stderr
    assert not (keystore / "keystore.pem").exists()


ELECTION_BIN = Path(os.environ.get("ELECTION_TEST_BIN", str(Path(__file__).resolve().parents[2] / "target/debug/election")))


@pytest.mark.skipif(not ELECTION_BIN.is_file(), reason=f"no election binary at {ELECTION_BIN} (cargo build first)")
def test_a_replica_leads_and_writes_over_the_bundled_tls(ensemble, tmp_path):
    certs = ensemble.tmp / "zk-tls"
    servers = ",".join(f"127.0.0.1:{p}" for p in ensemble.secure)
    files = tmp_path / "files"
    log = open(tmp_path / "election.log", "wb")
    p = subprocess.Popen(
        [str(ELECTION_BIN), "run", "--zk-servers", servers, "--zk-root", "/election/tls-test",
         "--zk-tls-ca-file", str(certs / "ca.crt"), "--zk-tls-cert-file", str(certs / "tls.crt"),
         "--zk-tls-key-file", str(certs / "tls.key"), "--file-dir", str(files), "--node-id", "tls-0",
         "--http-addr", "off", "--admin-addr", "off"],
        stdout=log, stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", "")},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(files.glob("leader_*.json")):
            assert p.poll() is None, (tmp_path / "election.log").read_text()
            time.sleep(0.2)
        assert list(files.glob("leader_*.json")), (tmp_path / "election.log").read_text()
    finally:
        p.terminate()
        assert p.wait(timeout=15) == 0, (tmp_path / "election.log").read_text()
