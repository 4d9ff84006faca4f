"""Real ZooKeeper servers on loopback, configured from the chart's rendering.

Shared by the tests that run the bundled ensemble's rendered settings with
Debian's ZooKeeper (3.8; the image has 3.9): find it, make the test
certificates, map the container's paths and the key store assembly of its
command to local files, ask four-letter words.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

ZK_JAR = Path("/usr/share/java/zookeeper.jar")
# Debian's zookeeper.jar names netty-handler and -transport in its manifest
# but not what the Netty server also needs.
EXTRA_JARS = ("slf4j-simple", "netty-codec", "netty-resolver", "netty-transport-native-unix-common")


def missing() -> str | None:
    """Why real servers cannot run here, or None."""
    if not ZK_JAR.is_file():
        return "Debian's zookeeper package is not installed (cargo xtask tools installs it)"
    for tool in ("java", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


def classpath() -> str:
    return ":".join([str(ZK_JAR)] + [p for j in EXTRA_JARS if Path(p := f"/usr/share/java/{j}.jar").is_file()])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(d: Path) -> None:
    """A CA and one certificate for 127.0.0.1 with server and client usages,
    written as the Secret's keys (ca.crt, tls.crt, tls.key; PKCS#8 key)."""
    d.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=zk-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=election-zookeeper", "-keyout", "tls.key",
        "-out", "tls.csr")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "tls.crt")


def map_paths(text: str, certs: Path, keystore: Path) -> str:
    """The Secret's and the key store's mount paths mapped to local dirs."""
    return re.sub(r"/zk-tls(-keystore)?/", lambda m: f"{keystore if m.group(1) else certs}/", text)


def keystore_lines(command: str, certs: Path, keystore: Path) -> str:
    """The command's key store lines (key check, assembly), paths mapped."""
    lines = [l.strip() for l in command.splitlines() if "/zk-tls/tls.key" in l]
    assert len(lines) == 2, f"expected the key check and the key store assembly in the command: {lines}"
    return map_paths("\n".join(lines), certs, keystore)


def four_letters(port: int, word: bytes, context: ssl.SSLContext | None = None, timeout: float = 5) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        sock.sendall(word)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out.decode(errors="replace")
