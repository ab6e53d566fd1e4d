"""REDIS_URL beyond one plain server, each started here from the Debian packages: TLS (`rediss://`,
with a CA and a client certificate made by openssl), Sentinel (a failover moves the primary and the
bots keep answering, history included) and a three-node Cluster (every script's keys in one slot)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from bots.services import Services
from bots.settings import Settings
from core.engine import ConversationEngine
from core.limits import Refusal, TurnLimits
from core.rate_budget import BucketSpec, RateBudget
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from tests.conftest import TEST_API_KEY
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink
from tests.ops.servers import (
    RedisServer,
    redis_binaries_missing,
    sentinel_knows_replica,
    start_cluster,
    start_sentinel_group,
    start_tls,
)

pytestmark = pytest.mark.skipif(redis_binaries_missing() is not None, reason=str(redis_binaries_missing()))
A = "test/model-a"


@dataclass
class Deployments:
    directory: Path
    tls_port: int
    sentinel: dict[str, int]
    sentinel_servers: list[RedisServer]
    cluster_ports: list[int]


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployments]:
    """The three setups, started at once (in threads) and shared by this module's tests."""
    root = tmp_path_factory.mktemp("managed-redis")
    for sub in ("tls", "sentinel", "cluster"):
        (root / sub).mkdir()
    with ThreadPoolExecutor(max_workers=3) as pool:
        tls = pool.submit(start_tls, root / "tls")
        sentinel = pool.submit(start_sentinel_group, root / "sentinel")
        cluster = pool.submit(start_cluster, root / "cluster")
        started: list[RedisServer] = []
        try:
            tls_server, tls_port = tls.result()
            started.append(tls_server)
            sentinel_servers, sentinel_ports = sentinel.result()
            started.extend(sentinel_servers)
            cluster_servers, cluster_ports = cluster.result()
            started.extend(cluster_servers)
            tls_server.wait_for("Ready to accept connections")
            yield Deployments(root, tls_port, sentinel_ports, sentinel_servers, cluster_ports)
        finally:
            for future in (tls, sentinel, cluster):  # a setup that failed after others started
                if future.done() and future.exception() is None:
                    servers = future.result()[0]
                    for server in servers if isinstance(servers, list) else [servers]:
                        server.stop()


def settings(chat_api: FakeChatAPI, url: str, **extra: str) -> Settings:
    return Settings.from_env({"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url,
                              "REDIS_URL": url, "REDIS_KEY_PREFIX": f"lbops-{uuid.uuid4().hex[:8]}", **extra})


def message(text: str, conversation: ConversationKey, user: str = "u1") -> IncomingMessage:
    return IncomingMessage(
        bot="ops", platform="slack", conversation=conversation, author=Author(user, user), text=text,
        event_id=uuid.uuid4().hex, received_at=time.time(),
    )


def profile_engine(services: Services, limits: TurnLimits | None = None) -> ConversationEngine:
    from tests.conftest import make_profile

    return services.engine(make_profile(name="ops", app_id="lunos-ops"), limits=limits)


async def two_turns(engine: ConversationEngine, chat_api: FakeChatAPI) -> None:
    """Two turns of one conversation; the second request carries the first exchange (history)."""
    conversation = ConversationKey("slack", "T1", uuid.uuid4().hex)
    chat_api.script(A, Behaviour(text="Remembered."), Behaviour(text="Still remembered."))
    first = await engine.handle(message("the code word is heron", conversation), RecordingSink())
    second = await engine.handle(message("what was the code word?", conversation), RecordingSink())
    assert (first.status, second.status, first.degraded, second.degraded) == ("answered", "answered", False, False)
    sent = [m["content"] for m in chat_api.requests[-1].body["messages"]]  # type: ignore[index]
    assert sent[1:] == ["the code word is heron", "Remembered.", "what was the code word?"]


class TestTLS:
    """`rediss://` with CA and client certificate, as query parameters or as REDIS_TLS_* settings."""

    async def test_query_parameters(self, deployments: Deployments, chat_api: FakeChatAPI) -> None:
        """ssl_ca_certs / ssl_certfile / ssl_keyfile in the URL: ready, and turns keep their history."""
        d = deployments.directory / "tls"
        url = (f"rediss://127.0.0.1:{deployments.tls_port}/0?ssl_ca_certs={d}/ca.pem"
               f"&ssl_certfile={d}/client.pem&ssl_keyfile={d}/client.key")
        async with Services(settings(chat_api, url)) as services:
            assert await services.redis_ready() is None
            await two_turns(profile_engine(services), chat_api)

    async def test_settings(self, deployments: Deployments, chat_api: FakeChatAPI) -> None:
        """REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE do the same for a bare URL."""
        d = deployments.directory / "tls"
        env = {"REDIS_TLS_CA_FILE": f"{d}/ca.pem", "REDIS_TLS_CERT_FILE": f"{d}/client.pem",
               "REDIS_TLS_KEY_FILE": f"{d}/client.key"}
        async with Services(settings(chat_api, f"rediss://127.0.0.1:{deployments.tls_port}/0", **env)) as services:
            assert await services.redis_ready() is None

    async def test_unverified_connections_are_refused(self, deployments: Deployments, chat_api: FakeChatAPI) -> None:
        """Without the CA the server is not trusted; without a client certificate the server refuses:
        /readyz would say so (not ready), and nothing is sent in clear."""
        d = deployments.directory / "tls"
        port = deployments.tls_port
        async with Services(settings(chat_api, f"rediss://127.0.0.1:{port}/0")) as services:
            problem = await services.redis_ready()
            assert problem is not None and "certificate" in problem.lower()
        async with Services(settings(chat_api, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d}/ca.pem")) as services:
            assert await services.redis_ready() is not None
        async with Services(settings(chat_api, f"redis://127.0.0.1:{port}/0")) as services:
            assert await services.redis_ready() is not None


class TestSentinel:
    """`redis+sentinel://host:port/service`: the client follows the primary Sentinel names."""

    async def test_failover_keeps_the_bots_answering(self, deployments: Deployments, chat_api: FakeChatAPI) -> None:
        """A turn is saved, Sentinel fails the primary over to the replica, and the next turn of the
        same conversation is answered on the new primary with the first turn in its history."""
        ports = deployments.sentinel
        primary = Redis(host="127.0.0.1", port=ports["primary"])
        sentinel_client = Redis(host="127.0.0.1", port=ports["sentinel"])
        promoted = Redis(host="127.0.0.1", port=ports["replica"])
        log = deployments.sentinel_servers[2]
        url = f"redis+sentinel://127.0.0.1:{ports['sentinel']}/mymaster"
        conversation = ConversationKey("slack", "T1", uuid.uuid4().hex)
        chat_api.script(A, Behaviour(text="Noted: heron."), Behaviour(text="It was heron."))
        try:
            async with Services(settings(chat_api, url)) as services:
                engine = profile_engine(services)
                first = await engine.handle(message("the code word is heron", conversation), RecordingSink())
                assert first.status == "answered" and not first.degraded
                assert await primary.wait(1, 5000) == 1  # the replica has the turn before the failover
                await asyncio.to_thread(sentinel_knows_replica, ports["sentinel"])
                assert await sentinel_client.execute_command("SENTINEL", "FAILOVER", "mymaster")
                log.wait_for(f"+switch-master mymaster 127.0.0.1 {ports['primary']} 127.0.0.1 {ports['replica']}")
                second = await engine.handle(message("what was the code word?", conversation), RecordingSink())
                assert second.status == "answered"
                sent = [m["content"] for m in chat_api.requests[-1].body["messages"]]  # type: ignore[index]
                assert "the code word is heron" in sent and "Noted: heron." in sent
                assert await services.redis_ready() is None
                role = await promoted.execute_command("ROLE")
                assert role[0] in (b"master", "master")
        finally:
            for client in (primary, sentinel_client, promoted):
                await client.aclose()


class TestCluster:
    """`redis+cluster://host:port,…`: every store on a three-node Redis Cluster."""

    def test_every_multi_key_operation_stays_in_one_slot(self) -> None:
        """The keys each script or transaction touches together share a hash tag, hence a slot."""
        keys = RedisKeys("lb")
        conv = ConversationKey("slack", "T1", "C1", "1700000000.000100")
        groups = [
            [keys.history("bot", conv), keys.reset_marker("bot", conv), keys.lock("bot", conv)],
            [keys.user_turns_in_flight("bot", "U1"), keys.user_turns_started("bot", "U1")],
            [keys.bucket("T1:chat.update"), keys.bucket_holders("T1:chat.update")],
        ]
        for group in groups:
            assert len({key_slot(k.encode()) for k in group}) == 1, group

    async def test_the_engine_limits_and_budgets_run_on_a_cluster(
        self, deployments: Deployments, chat_api: FakeChatAPI,
    ) -> None:
        """History, dedupe, locks, usage (read across every node), the limits script and the rate
        budget's scripts all work through RedisCluster, redirects included."""
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in deployments.cluster_ports)
        async with Services(settings(chat_api, url)) as services:
            assert await services.redis_ready() is None
            engine = profile_engine(services, TurnLimits(user_turns_per_minute=3, user_turns_in_flight=1))
            await two_turns(engine, chat_api)
            for i in range(3):  # the third turn this minute, and then one too many
                conv = ConversationKey("slack", "T1", f"c{i}")
                chat_api.script(A, Behaviour(text="ok"))
                await engine.handle(message(f"turn {i}", conv, user="u2"), RecordingSink())
            limiter = engine._limits
            assert limiter is not None
            refused = await limiter.admit(message("one more", ConversationKey("slack", "T1", "c9"), user="u2"))
            assert isinstance(refused, Refusal) and refused.limit == "user_turns_per_minute"
            rows = await services.usage.read(app_id=None, days=1)
            assert sum(r.requests for r in rows if r.app_id == "lunos-ops") == 5
            budget = RateBudget(services.redis, services.keys)
            spec = BucketSpec(capacity=2, refill_per_s=1)
            assert await budget.reserve("T1:chat.update", spec) == 0.0
            assert await budget.admit("T1:chat.update", spec, "reply-1", ttl_s=5)
            assert not budget.degraded
