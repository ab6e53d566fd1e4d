"""Run a command with REDIS_URL pointing at a Redis that answers.

REDIS_URL if it answers; else a `redis-server` from PATH started on a free port (no persistence,
its own temporary directory) and stopped afterwards; else one line saying how to install Redis.
Used by `make test` and `make bench`; never touches a database it did not create.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

START_TIMEOUT_S = 10.0


def _answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(command: list[str]) -> int:
    url = os.environ.get("REDIS_URL", "").strip()
    if url and _answers(url):
        return subprocess.call(command)
    server = shutil.which("redis-server")
    if server is None:
        print("tests need Redis: set REDIS_URL to a running server, or install redis-server "
              "(apt install redis-server / brew install redis)", file=sys.stderr)
        return 2
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="lunos-bots-redis-") as workdir:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(f"redis-server did not start on port {port}", file=sys.stderr)
                    return 2
                time.sleep(0.05)  # waiting for a process to listen, not for a test result
            return subprocess.call(command, env={**os.environ, "REDIS_URL": url})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
