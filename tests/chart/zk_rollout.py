"""`helm upgrade` of the bundled ensemble played on real processes, without Kubernetes.

Three ZooKeeper servers (Debian's 3.8) and three `election run` replicas on
loopback, configured from the chart's rendering of each release, and a
driver that applies a list of releases as Kubernetes would apply each
`helm upgrade`: the NetworkPolicy changes at once, then both StatefulSets
roll together, one pod at a time from the highest ordinal, each waited for
Ready before the next (a server: `srvr` shows a Mode over its loopback plain
port, as the readiness probe asks; a replica: `/readyz`), a replica's
preStop (`election release`) before its SIGTERM. A StatefulSet whose pod
template did not change does not roll.

What is mapped, and why: the servers' fixed ports to free ones (they share
one host), the Secret and key store mount paths to temp dirs, the replicas'
file-dir to one shared temp dir (the chart's shared claim) with the
retention raised so that `election verify` sees every file of the run,
their HTTP and admin addresses to free loopback ports. tickTime, limits,
timeouts and every other setting are the rendered ones.

The pod network is a gate per server and client port: a TCP relay that the
replicas dial instead of `<zk>-N.<zk>-headless:<port>`. It connects to the
server on 127.0.0.2, the server's "pod IP" (a port bound to 127.0.0.1 only
refuses it there, as on a pod IP), and only while the rendered NetworkPolicy
admits that port from the replicas. A policy change refuses new connections
(at once; a real policy drops them, which is slower) and lets established
ones live, as conntrack does: the lenient case.

A monitor asks every replica's `/status` and every server's `srvr` every
0.2 s and the run's outcome says what it saw: two replicas leading at one
instant (proven from the `since_ms` of their states, not a sighting that
the sweep's own skew explains), a replica that stopped leading without
being restarted, windows without a leader or without a quorum, leader
changes, the duration of each step, and `election verify` on the files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import Manifests, container, render
from zk_local import classpath, four_letters, free_port, keystore_lines, make_certs, map_paths

ROOT = Path(__file__).resolve().parents[2]
ELECTION_BIN = Path(os.environ.get("ELECTION_TEST_BIN", str(ROOT / "target/debug/election")))
POD_IP = "127.0.0.2"
SWEEP_S = 0.2
N = 3


@dataclass
class Release:
    """What one rendering of the chart asks of the servers, the replicas and the network."""

    name: str
    zk_template: dict
    zk_env: dict[str, str]
    zk_command: str
    el_template: dict
    el_env: dict[str, str]
    pre_stop: list[str]
    grace_s: int
    # Port names of the servers that the ZooKeeper NetworkPolicy admits from the replicas.
    admitted: frozenset[str]


def rendered(helm: str, name: str, sets: tuple[str, ...]) -> Release:
    m = Manifests(render(helm, sets=sets))
    zk, el = m.zookeeper, m.election
    zc, ec = container(zk, "zookeeper"), container(el, "election")
    policy = m.one("NetworkPolicy", zk["metadata"]["name"])
    replicas = el["spec"]["selector"]["matchLabels"]
    admitted = set()
    for rule in policy["spec"]["ingress"]:
        if any(f.get("podSelector", {}).get("matchLabels") == replicas for f in rule.get("from", [])):
            admitted |= {p["port"] for p in rule["ports"]}
    return Release(
        name=name,
        zk_template=zk["spec"]["template"],
        zk_env={e["name"]: e["value"] for e in zc["env"] if "value" in e},
        zk_command=zc["command"][-1],
        el_template=el["spec"]["template"],
        el_env={e["name"]: e["value"] for e in ec["env"] if "value" in e},
        pre_stop=ec["lifecycle"]["preStop"]["exec"]["command"],
        grace_s=el["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        admitted=frozenset(admitted),
    )


class Stalled(Exception):
    """A restarted pod did not become Ready: the rollout waits forever."""


class Server:
    """One ZooKeeper server (pod <zk>-i) with its data dir kept across restarts (the claim)."""

    def __init__(self, i: int, tmp: Path, certs: Path, ports: dict[str, list[int]]):
        self.i, self.certs, self.ports = i, certs, ports
        self.dir = tmp / f"zk{i}"
        (self.dir / "data").mkdir(parents=True)
        (self.dir / "data" / "myid").write_text(f"{i + 1}\n")
        self.log = self.dir / "zookeeper.log"
        self.proc: subprocess.Popen | None = None

    def start(self, rel: Release) -> None:
        env, keystore = rel.zk_env, self.dir / "keystore"
        keystore.mkdir(exist_ok=True)
        for f in keystore.iterdir():  # an emptyDir: new with the pod
            f.unlink()
        if "/zk-tls/tls.key" in rel.zk_command:
            subprocess.run(["bash", "-ec", keystore_lines(rel.zk_command, self.certs, keystore)], check=True)
        p = self.ports
        cfg = [
            f"dataDir={self.dir / 'data'}",
            f"dataLogDir={self.dir / 'data' / 'datalog'}",
            f"tickTime={env['ZOO_TICK_TIME']}",
            f"initLimit={env['ZOO_INIT_LIMIT']}",
            f"syncLimit={env['ZOO_SYNC_LIMIT']}",
            f"maxClientCnxns={env['ZOO_MAX_CLIENT_CNXNS']}",
            "standaloneEnabled=false",
            f"admin.enableServer={env['ZOO_ADMINSERVER_ENABLED']}",
            f"4lw.commands.whitelist={env['ZOO_4LW_COMMANDS_WHITELIST']}",
        ]
        for item in env["ZOO_CFG_EXTRA"].split():
            cfg.append(map_paths(item.replace("secureClientPort=2281", f"secureClientPort={p['secure'][self.i]}"),
                                 self.certs, keystore))
        for j, line in enumerate(env["ZOO_SERVERS"].split()):
            # server.<id>=<host>:2888:3888;[127.0.0.1:]2181
            m = re.fullmatch(r"server\.(\d+)=[^:]+:2888:3888;(127\.0\.0\.1:)?2181", line)
            assert m and int(m.group(1)) == j + 1, f"unexpected ZOO_SERVERS item {line!r}"
            cfg.append(f"server.{j + 1}=127.0.0.1:{p['peer'][j]}:{p['elect'][j]};{m.group(2) or ''}{p['plain'][j]}")
        (self.dir / "zoo.cfg").write_text("\n".join(cfg) + "\n")
        with open(self.log, "ab") as log:
            log.write(f"\n===== start with release {rel.name} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                ["java", "-Xmx128m", "-cp", classpath(), "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                 str(self.dir / "zoo.cfg")],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def mode(self) -> str | None:
        """The Mode `srvr` reports on the loopback plain port (the probes' way), or None."""
        try:
            m = re.search(r"^Mode: (\w+)", four_letters(self.ports["plain"][self.i], b"srvr", timeout=1), re.M)
        except OSError:
            return None
        return m.group(1) if m else None

    def tail(self) -> str:
        return f"--- zk{self.i} ---\n" + self.log.read_text(errors="replace")[-2500:]


class Gate:
    """The pod network in front of one server port: relays while the policy admits the port name."""

    def __init__(self, port_name: str, target: int, policy: dict):
        self.port_name, self.target, self.policy = port_name, target, policy
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        if self.port_name not in self.policy["admitted"]:
            self.refused += 1
            client.close()
            return
        try:
            upstream = socket.create_connection((POD_IP, self.target), timeout=2)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self) -> None:
        self.sock.close()


class Replica:
    """One `election run` (pod election-j), configured from the rendered env."""

    def __init__(self, j: int, tmp: Path, files: Path, certs: Path, gates: dict[tuple[int, int], Gate]):
        self.j, self.files, self.certs, self.gates = j, files, certs, gates
        self.node = f"election-{j}"
        self.http, self.admin = free_port(), free_port()
        self.log = tmp / f"{self.node}.log"
        # The pod's emptyDir for --state-dir: private to this replica.
        self.state = tmp / f"{self.node}.state"
        self.proc: subprocess.Popen | None = None

    def env(self, rel: Release) -> dict[str, str]:
        # Pod identity and what needs it (labels, Events, the Lease mirror) stay off: there is
        # no API server here, and none of it influences the election.
        env = {k: v for k, v in rel.el_env.items()
               if k not in ("ELECTION_POD_SELECTOR", "ELECTION_LEASE_NAME", "ELECTION_POD_EVENTS")}
        servers = []
        for item in env["ELECTION_ZK_SERVERS"].split(","):
            m = re.fullmatch(r"[^.]+-(\d+)\.[^:]+:(\d+)", item)
            assert m, f"unexpected ELECTION_ZK_SERVERS item {item!r}"
            servers.append(f"127.0.0.1:{self.gates[(int(m.group(1)), int(m.group(2)))].port}")
        env.update(
            ELECTION_ZK_SERVERS=",".join(servers),
            ELECTION_FILE_DIR=str(self.files),
            ELECTION_STORAGE_CAPACITY="100000",
            ELECTION_HTTP_ADDR=f"127.0.0.1:{self.http}",
            ELECTION_ADMIN_ADDR=f"127.0.0.1:{self.admin}",
            ELECTION_NODE_ID=self.node,
            PATH=os.environ.get("PATH", ""),
        )
        if "ELECTION_STATE_DIR" in env:
            env["ELECTION_STATE_DIR"] = str(self.state)
        return {k: v.replace("/etc/election/zk-tls/", f"{self.certs}/") for k, v in env.items()}

    def start(self, rel: Release) -> None:
        with open(self.log, "ab") as log:
            log.write(f"\n===== start with release {rel.name} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen([str(ELECTION_BIN), "run"], env=self.env(rel), stdout=log,
                                         stderr=subprocess.STDOUT)

    def stop(self, rel: Release) -> None:
        """The pod's preStop (`election release`), then SIGTERM within the grace period."""
        cmd = [str(ELECTION_BIN) if a.endswith("/election") else a for a in rel.pre_stop]
        cmd[cmd.index("--admin-addr") + 1] = f"127.0.0.1:{self.admin}"
        try:
            subprocess.run(cmd, capture_output=True, timeout=rel.grace_s, check=False)
        except subprocess.TimeoutExpired:
            pass  # the kubelet sends SIGTERM at the end of the grace period anyway
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=rel.grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str) -> tuple[int, bytes] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=1) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, b""
        except OSError:
            return None

    def status(self) -> dict | None:
        got = self.get("/status")
        return json.loads(got[1]) if got and got[0] == 200 else None

    def ready(self) -> bool:
        got = self.get("/readyz")
        return bool(got and got[0] == 200)

    def tail(self) -> str:
        return f"--- {self.node} ---\n" + self.log.read_text(errors="replace")[-2500:]


@dataclass
class Sweep:
    """One round of the monitor: each replica's /status (None: no answer) and each server's Mode."""

    t: float  # wall clock, seconds, when the round began
    read_at: list[float]  # wall clock, seconds, when each replica was asked
    status: list[dict | None]
    modes: list[str | None]

    def leaders(self) -> list[int]:
        return [j for j, s in enumerate(self.status) if s and s["state"] == "leader"]

    def quorum(self) -> bool:
        return "leader" in self.modes and sum(m is not None for m in self.modes) >= 2


@dataclass
class Outcome:
    """What a run saw; `report()` prints it."""

    steps: list[tuple[str, float]] = field(default_factory=list)  # (release, seconds to roll)
    stalls: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    lost_without_restart: list[str] = field(default_factory=list)
    leader_changes: list[str] = field(default_factory=list)
    leaderless: list[tuple[float, float]] = field(default_factory=list)  # (start from t0, seconds)
    no_quorum: list[tuple[float, float]] = field(default_factory=list)
    final_leaders: list[str] = field(default_factory=list)
    final_modes: list[str | None] = field(default_factory=list)
    verify_rc: int | None = None
    verify_out: str = ""
    refused: dict[str, int] = field(default_factory=dict)
    # Per server at the end: does its plain port accept a connection on its pod IP?
    plain_open_at_end: list[bool] = field(default_factory=list)
    logs: str = ""

    def report(self) -> str:
        def windows(ws: list[tuple[float, float]]) -> str:
            if not ws:
                return "none"
            return f"{len(ws)}, longest {max(d for _, d in ws):.1f} s: " + ", ".join(
                f"{d:.1f} s at +{s:.1f} s" for s, d in ws)

        lines = ["steps (release: seconds until both StatefulSets rolled):"]
        lines += [f"  {name}: {s:.1f} s" for name, s in self.steps]
        lines += [
            f"total: {sum(s for _, s in self.steps[1:]):.1f} s after the plain-text start",
            f"leader changes: {len(self.leader_changes)}" + "".join(f"\n  {c}" for c in self.leader_changes),
            f"windows without a leader (sweep {SWEEP_S} s): {windows(self.leaderless)}",
            f"windows without a quorum: {windows(self.no_quorum)}",
            f"two leaders at one instant: {self.overlaps or 'never'}",
            f"leadership lost without a restart: {self.lost_without_restart or 'never'}",
            f"stalled rollouts: {self.stalls or 'none'}",
            f"connections refused by the NetworkPolicy: {self.refused}",
            f"at the end: leaders {self.final_leaders}, server modes {self.final_modes}, "
            f"plain port open on the pod IP {self.plain_open_at_end}",
            f"election verify: exit {self.verify_rc}: {self.verify_out.strip()}",
        ]
        return "\n".join(lines)


class Cluster:
    """The servers, the replicas, the gates and the monitor of one run."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.certs = tmp / "zk-tls"
        make_certs(self.certs)
        self.files = tmp / "files"
        self.ports = {k: [free_port() for _ in range(N)] for k in ("plain", "secure", "peer", "elect")}
        self.policy = {"admitted": frozenset()}
        self.gates = {}
        for i in range(N):
            self.gates[(i, 2181)] = Gate("client", self.ports["plain"][i], self.policy)
            self.gates[(i, 2281)] = Gate("client-tls", self.ports["secure"][i], self.policy)
        self.servers = [Server(i, tmp, self.certs, self.ports) for i in range(N)]
        self.replicas = [Replica(j, tmp, self.files, self.certs, self.gates) for j in range(N)]
        self.sweeps: list[Sweep] = []
        # Per replica: [stop began, new process started] of each restart.
        self.restarts: list[list[tuple[float, float]]] = [[] for _ in range(N)]
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            read_at, status = [], []
            for r in self.replicas:
                read_at.append(time.time())
                status.append(r.status())
            self.sweeps.append(Sweep(t, read_at, status, [s.mode() for s in self.servers]))
            self._stop.wait(max(0.0, SWEEP_S - (time.time() - t)))

    def wait_for(self, what, ok, timeout: float) -> None:
        """Waits until ok(); Stalled with what (a str, or a callable asked then) after timeout."""
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                raise Stalled(what() if callable(what) else what)
            time.sleep(0.2)

    def roll_servers(self, old: Release, new: Release, stall_s: float) -> None:
        for s in reversed(self.servers):
            s.stop()
            s.start(new)
            self.wait_for(
                lambda: f"zk{s.i} restarted with release {new.name} reports no Mode after {stall_s:.0f} s "
                f"(modes now {[x.mode() for x in self.servers]})",
                lambda: s.mode() is not None, stall_s)

    def roll_replicas(self, old: Release, new: Release, stall_s: float) -> None:
        for r in reversed(self.replicas):
            began = time.time()
            r.stop(old)
            r.start(new)
            self.restarts[r.j].append((began, time.time()))
            self.wait_for(
                lambda: f"{r.node} restarted with release {new.name} is not ready after {stall_s:.0f} s "
                f"(state {(r.status() or {}).get('state')}: {(r.status() or {}).get('cause_detail')})",
                r.ready, stall_s)

    def start(self, rel: Release, stall_s: float) -> None:
        self.policy["admitted"] = rel.admitted
        for s in self.servers:
            s.start(rel)
        self.wait_for("no quorum at the start", lambda: sorted(map(str, (s.mode() for s in self.servers)))
                      == ["follower", "follower", "leader"], stall_s)
        for r in self.replicas:
            r.start(rel)
        self.wait_for("the replicas are not ready at the start", lambda: all(r.ready() for r in self.replicas),
                      stall_s)
        self._monitor.start()
        self.wait_for("no leader at the start", lambda: bool(self.sweeps and self.sweeps[-1].leaders()), stall_s)

    def upgrade(self, old: Release, new: Release, stall_s: float, out: Outcome) -> None:
        """One `helm upgrade`: the policy at once, both StatefulSets rolled together."""
        began = time.time()
        self.policy["admitted"] = new.admitted
        rolls = []
        if new.zk_template != old.zk_template:
            rolls.append(threading.Thread(target=self._roll, args=(self.roll_servers, old, new, stall_s, out)))
        if new.el_template != old.el_template:
            rolls.append(threading.Thread(target=self._roll, args=(self.roll_replicas, old, new, stall_s, out)))
        for t in rolls:
            t.start()
        for t in rolls:
            t.join()
        out.steps.append((new.name, time.time() - began))

    @staticmethod
    def _roll(roll, old: Release, new: Release, stall_s: float, out: Outcome) -> None:
        try:
            roll(old, new, stall_s)
        except Stalled as e:
            out.stalls.append(str(e))
        except Exception as e:  # noqa: BLE001 - a broken driver must fail the run, not hang it
            out.stalls.append(f"the rollout to {new.name} failed: {e!r}")

    def stop(self, rel: Release) -> None:
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join()
        for r in self.replicas:
            r.stop(rel)
        for s in self.servers:
            s.stop()
        for g in self.gates.values():
            g.close()

    @staticmethod
    def reachable(port: int) -> bool:
        try:
            socket.create_connection((POD_IP, port), timeout=2).close()
            return True
        except OSError:
            return False

    def logs(self) -> str:
        return "\n".join([s.tail() for s in self.servers] + [r.tail() for r in self.replicas])

    def analyse(self, out: Outcome) -> None:
        t0 = self.sweeps[0].t if self.sweeps else 0.0
        last: dict[int, float] = {}  # replica -> time of its last sweep as leader
        holder: tuple[str, int | None] | None = None
        gap_from: float | None = None
        quorum_gap_from: float | None = None
        for k, sw in enumerate(self.sweeps):
            leaders = sw.leaders()
            # Two replicas leading in one sweep: an overlap only if both were
            # leaders at one instant: each has led since its since_ms and
            # still did when asked.
            for a in leaders:
                for b in leaders:
                    if a < b:
                        sa, sb = sw.status[a], sw.status[b]
                        if max(sa["since_ms"], sb["since_ms"]) / 1000 < min(sw.read_at[a], sw.read_at[b]):
                            out.overlaps.append(f"+{sw.t - t0:.1f} s: {sa} and {sb}")
            # A replica that led in the previous sweep and does not now must be restarting.
            if k:
                for j in self.sweeps[k - 1].leaders():
                    if j not in leaders and not any(b <= sw.t <= e + 1.0 for b, e in self.restarts[j]):
                        out.lost_without_restart.append(
                            f"+{sw.t - t0:.1f} s: election-{j} now {sw.status[j] or 'not answering'}")
            for j in leaders:
                last[j] = sw.t
            if len(leaders) == 1:
                s = sw.status[leaders[0]]
                now = (s["node_id"], s.get("token"))
                # A new leadership: another node, or another token (the token
                # is unknown for a moment after a leader is entered).
                if holder and (now[0] != holder[0] or None not in (now[1], holder[1]) and now[1] != holder[1]):
                    out.leader_changes.append(f"+{sw.t - t0:.1f} s: {holder[0]} -> {now[0]} (token {now[1]})")
                if not holder or now[1] is not None or now[0] != holder[0]:
                    holder = now
            if not leaders and gap_from is None:
                gap_from = self.sweeps[k - 1].t if k else sw.t
            if leaders and gap_from is not None:
                out.leaderless.append((gap_from - t0, sw.t - gap_from))
                gap_from = None
            if not sw.quorum() and quorum_gap_from is None:
                quorum_gap_from = self.sweeps[k - 1].t if k else sw.t
            if sw.quorum() and quorum_gap_from is not None:
                out.no_quorum.append((quorum_gap_from - t0, sw.t - quorum_gap_from))
                quorum_gap_from = None
        if gap_from is not None:
            out.leaderless.append((gap_from - t0, self.sweeps[-1].t - gap_from))
        if quorum_gap_from is not None:
            out.no_quorum.append((quorum_gap_from - t0, self.sweeps[-1].t - quorum_gap_from))
        if self.sweeps:
            end = self.sweeps[-1]
            out.final_leaders = [end.status[j]["node_id"] for j in end.leaders()]
            out.final_modes = end.modes
        out.refused = {f"zk{i}:{g.port_name}": g.refused for (i, _), g in self.gates.items() if g.refused}


def migrate(helm: str, tmp: Path, steps: list[tuple[str, tuple[str, ...]]], stall_s: float = 60,
            settle_s: float = 12) -> Outcome:
    """Starts everything with the first release, upgrades to each next one in turn, then stops
    everything and checks the files. A stalled rollout ends the run (Kubernetes would wait)."""
    releases = [rendered(helm, name, sets) for name, sets in steps]
    out = Outcome()
    cluster = Cluster(tmp)
    current = releases[0]
    try:
        began = time.time()
        try:
            cluster.start(current, stall_s)
        except Stalled as e:
            out.stalls.append(f"at the start: {e}")
            return out
        out.steps.append((current.name, time.time() - began))
        for new in releases[1:]:
            # Let the leader write between steps (leaderTimeout is 10 s by default).
            time.sleep(settle_s)
            cluster.upgrade(current, new, stall_s, out)
            current = new
            if out.stalls:
                break
        time.sleep(2)
        out.plain_open_at_end = [cluster.reachable(p) for p in cluster.ports["plain"]]
    finally:
        cluster.stop(current)
        cluster.analyse(out)
        out.logs = cluster.logs()
    v = subprocess.run([str(ELECTION_BIN), "verify", "--file-dir", str(cluster.files)], capture_output=True,
                       text=True, check=False)
    out.verify_rc, out.verify_out = v.returncode, v.stdout + v.stderr
    return out
