"""REDIS_URL → a redis-py client: a single server, Sentinel or Cluster, with or without TLS.

Every form goes through redis-py's own clients (`Redis` with a pool, `Sentinel.master_for`,
`RedisCluster`), so reconnects, failover and slot redirects are redis-py's:

- `redis://[:password@]host:port/db`, `rediss://…` (TLS), `unix:///path` — redis-py's own URLs;
- `redis+sentinel://[:password@]host:port[,host:port…]/service[/db]` — the Sentinels to ask and the
  service (master) name; `rediss+sentinel://` reaches the master over TLS. `?sentinel_password=…`
  when the Sentinels have a password of their own;
- `redis+cluster://[:password@]host:port[,host:port…]` — any nodes of a Redis Cluster (the rest are
  discovered); `rediss+cluster://` over TLS. Every key that one command or script touches shares a
  hash tag, so each lands in one slot.

TLS options come from the URL's query (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
`ssl_cert_reqs`, `ssl_check_hostname`, as redis-py names them) or from REDIS_TLS_* (`RedisTLS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from bots.settings import RedisTLS, SettingsError, redact_url

REDIS_CONNECT_TIMEOUT_S = 2.0  # a down Redis must not stall a turn for long
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_HEALTH_CHECK_INTERVAL_S = 30
# Turns wait for a free connection rather than fail: redis-py's default pool raises at 100, and
# a burst of replies would then look like an outage (benchmarks row 2b).
REDIS_MAX_CONNECTIONS = 500
REDIS_POOL_WAIT_S = 5.0
SENTINEL_PORT = 26379  # Sentinel's default port, when a host names none
REDIS_PORT = 6379
TLS_QUERY_OPTIONS = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                               "ssl_check_hostname", "ssl_ca_path"})
BOOLEAN_QUERY_OPTIONS = frozenset({"ssl_check_hostname"})


@dataclass(frozen=True)
class RedisTarget:
    """What REDIS_URL names, parsed: the kind of deployment, its nodes and options."""

    kind: str  # "server", "sentinel" or "cluster"
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""  # Sentinel: the master's name
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # the query, for redis-py


def parse_redis_url(url: str) -> RedisTarget:
    """Sentinel and Cluster URLs parsed (a plain URL is left to redis-py: kind "server")."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        return RedisTarget(kind="server", tls=scheme == "rediss")
    kind = scheme.partition("+")[2]
    location, _, query = rest.partition("?")
    netloc, _, path = location.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = SENTINEL_PORT if kind == "sentinel" else REDIS_PORT
    nodes = tuple(_node(part, default_port, url) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise SettingsError(f"REDIS_URL={redact_url(url)!r}: name at least one host:port")
    segments = [unquote(p) for p in path.split("/") if p]
    service = ""
    db = 0
    if kind == "sentinel":
        if not segments:
            raise SettingsError(f"REDIS_URL={redact_url(url)!r}: name the Sentinel service, "
                                "e.g. redis+sentinel://host:26379/mymaster")
        service = segments[0]
        db = _db(segments[1] if len(segments) > 1 else "0", url)
    elif segments:
        db = _db(segments[0], url)
        if db != 0:
            raise SettingsError(f"REDIS_URL={redact_url(url)!r}: Redis Cluster has only database 0")
    options = tuple((k, unquote(v[0])) for k, v in parse_qs(query).items() if v)
    return RedisTarget(kind=kind, tls=scheme.startswith("rediss"), nodes=nodes, service=service, db=db,
                       username=username, password=password, options=options)


def _node(part: str, default_port: int, url: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        return part.strip(), default_port
    if not port.isdigit():
        raise SettingsError(f"REDIS_URL={redact_url(url)!r}: {part!r} is not host:port")
    return host.strip("[]"), int(port)


def _db(raw: str, url: str) -> int:
    if not raw.isdigit():
        raise SettingsError(f"REDIS_URL={redact_url(url)!r}: {raw!r} is not a database number")
    return int(raw)


def _tls_options(target: RedisTarget, tls: RedisTLS) -> dict[str, Any]:
    """redis-py's ssl_* keyword arguments: REDIS_TLS_* first, the URL's query overriding them."""
    options: dict[str, Any] = {}
    if tls.ca_file:
        options["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file:
        options["ssl_certfile"] = tls.cert_file
    if tls.key_file:
        options["ssl_keyfile"] = tls.key_file
    for name, value in target.options:
        if name in TLS_QUERY_OPTIONS:
            options[name] = value.lower() in ("1", "true", "yes") if name in BOOLEAN_QUERY_OPTIONS else value
    return options


class SentinelMaster(Redis):
    """The client of a Sentinel-managed primary; closing it also closes its connections to the
    Sentinels (redis-py leaves those open)."""

    sentinels: Sentinel | None = None  # set by `connect`

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            for client in self.sentinels.sentinels:
                await client.aclose()


COMMON_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S, "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
    "health_check_interval": REDIS_HEALTH_CHECK_INTERVAL_S,
}


def connect(url: str, tls: RedisTLS | None = None) -> Redis:
    """A client for REDIS_URL. Sentinel and Cluster clients are typed as `Redis`: the stores use the
    commands the three share (a `RedisCluster` is not a `Redis` subclass, but answers the same calls)."""
    tls = tls or RedisTLS()
    target = parse_redis_url(url)
    if target.kind == "server":
        extra = _tls_options(target, tls) if target.tls else {}
        # The URL's own query wins over REDIS_TLS_*: from_url applies it on top of these.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_WAIT_S, **COMMON_OPTIONS, **extra,
        )
        return Redis.from_pool(pool)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    secure: dict[str, Any] = {"ssl": True, **_tls_options(target, tls)} if target.tls else {}
    if target.kind == "sentinel":
        sentinel_password = dict(target.options).get("sentinel_password")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
            list(target.nodes),
            sentinel_kwargs={"password": sentinel_password, "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
                             "socket_timeout": REDIS_SOCKET_TIMEOUT_S},
            **COMMON_OPTIONS,
        )
        master: SentinelMaster = sentinel.master_for(target.service, redis_class=SentinelMaster, db=target.db,
                                                     max_connections=REDIS_MAX_CONNECTIONS, **auth, **secure)
        master.sentinels = sentinel
        return master
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        max_connections=REDIS_MAX_CONNECTIONS, **COMMON_OPTIONS, **auth, **secure,
    )
    return cast(Redis, cluster)
