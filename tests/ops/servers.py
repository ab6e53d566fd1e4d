"""Throwaway `redis-server` processes for the managed-Redis tests: TLS with a certificate made by
openssl at test time, a primary with a replica under Sentinel, a three-node Cluster.

Every process runs on free ports in a temporary directory, with persistence off, and is ended by the
fixture that started it (by its own pid). Readiness is read from each server's log, never slept for.
"""

from __future__ import annotations

import queue
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

READY_TIMEOUT_S = 15.0  # an upper bound for a local server to reach a state; never a speed assertion
CLUSTER_BUS_OFFSET = 10_000  # Redis Cluster's node-to-node port is the client port + 10000
EPHEMERAL_LOW, EPHEMERAL_HIGH = 20_000, 30_000  # so that port + 10000 stays a valid port too


def redis_binaries_missing() -> str | None:
    """Why these tests cannot run here, or None."""
    for binary in ("redis-server", "redis-cli", "openssl"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian: apt-get install redis-server openssl)"
    return None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, with_bus: bool = False) -> list[int]:
    """`count` distinct free ports (and, `with_bus`, each port + 10000 free as well)."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(EPHEMERAL_LOW, EPHEMERAL_HIGH)
        if port in chosen or not _free(port) or (with_bus and not _free(port + CLUSTER_BUS_OFFSET)):
            continue
        chosen.append(port)
    return chosen


class RedisServer:
    """One `redis-server` process whose log lines are read as they come."""

    def __init__(self, name: str, args: list[str], cwd: Path) -> None:
        self.name = name
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            ["redis-server", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, needle: str, timeout: float = READY_TIMEOUT_S) -> str:
        """Until a log line contains `needle` (lines already read count); the line."""
        for line in self.log:
            if needle in line:
                return line
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no {needle!r} in its log:\n{''.join(self.log)}") from None
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.proc.poll()}):\n{''.join(self.log)}")
            self.log.append(line)
            if needle in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)  # it ends with the process's output
        if self.proc.stdout is not None:
            self.proc.stdout.close()


NO_PERSISTENCE = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
READY = "Ready to accept connections"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certificates(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=lunos-bots test CA", cwd=directory)
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        (directory / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=directory)


def start_tls(directory: Path) -> tuple[RedisServer, int]:
    """A TLS-only server that requires a client certificate signed by the test CA."""
    make_certificates(directory)
    [port] = free_ports(1)
    server = RedisServer("tls", [
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
        "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "yes", *NO_PERSISTENCE,
    ], directory)
    return server, port


def start_sentinel_group(directory: Path) -> tuple[list[RedisServer], dict[str, int]]:
    """A primary, its replica (in sync) and one Sentinel watching them as `mymaster`, told of the
    replica in its configuration. Quorum 1: one Sentinel decides alone. Before a failover, wait for
    `sentinel_knows_replica` (the Sentinel must have heard from the replica)."""
    primary_port, replica_port, sentinel_port = free_ports(3)
    # No diskless-sync delay: by default a primary waits 5 s for more replicas before a full sync.
    primary = RedisServer("primary", ["--port", str(primary_port), "--repl-diskless-sync-delay", "0",
                                      *NO_PERSISTENCE], directory)
    replica = RedisServer("replica", ["--port", str(replica_port), "--replicaof", "127.0.0.1", str(primary_port),
                                      *NO_PERSISTENCE], directory)
    servers = [primary, replica]
    try:
        primary.wait_for(READY)
        replica.wait_for("MASTER <-> REPLICA sync: Finished with success")
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {primary_port} 1\n"
            # Known from the start, instead of from the primary's INFO up to 10 s later.
            f"sentinel known-replica mymaster 127.0.0.1 {replica_port}\n"
            "sentinel down-after-milliseconds mymaster 2000\n"
            "sentinel failover-timeout mymaster 10000\n"
        )
        sentinel = RedisServer("sentinel", [str(conf), "--sentinel"], directory)
        servers.append(sentinel)
        sentinel.wait_for("+monitor master mymaster")
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers, {"primary": primary_port, "replica": replica_port, "sentinel": sentinel_port}


def sentinel_knows_replica(sentinel_port: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Until the Sentinel has the replica's INFO, without which it will not promote it. Sentinel logs
    no event for a configured replica, so this asks it (a bounded wait for a state, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["redis-cli", "-p", str(sentinel_port), "--raw", "SENTINEL", "REPLICAS", "mymaster"],
                             capture_output=True, text=True, timeout=10).stdout
        lines = out.splitlines()  # one replica: its fields and values, one per line
        fields = dict(zip(lines[::2], lines[1::2], strict=False))
        if fields.get("master-link-status") == "ok" and "s_down" not in fields.get("flags", "s_down"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Sentinel never heard from the replica: {out}")
        time.sleep(0.05)


def start_cluster(directory: Path) -> tuple[list[RedisServer], list[int]]:
    """Three primaries (no replicas) sharing the 16384 slots, created with `redis-cli --cluster create`."""
    ports = free_ports(3, with_bus=True)
    servers = [RedisServer(f"node-{port}", [
        "--port", str(port), "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", "2000", *NO_PERSISTENCE,
    ], directory) for port in ports]
    try:
        for server in servers:
            server.wait_for(READY)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
             "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if "All 16384 slots covered" not in created.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        for server in servers:
            server.wait_for("Cluster state changed: ok")
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers, ports
