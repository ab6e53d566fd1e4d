"""Self-test of :mod:`tests.fakes.discord_api`: the unmodified discord.py client against FakeDiscord."""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord_api import FakeDiscord, point_discord_py_at

with warnings.catch_warnings():  # discord.py imports the deprecated stdlib audioop (fatal under -W error)
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord
    from discord import app_commands

TIMEOUT = 5.0
GUILD = discord.Object(id=2000)


class RecordingClient(discord.Client):
    """A discord.Client that exposes on_ready / on_message / on_resumed to the test."""

    def __init__(self, *, intents: discord.Intents) -> None:
        # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE before on_ready
        super().__init__(intents=intents, guild_ready_timeout=0.1)
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.inbox.put(message)


async def next_message(
    client: RecordingClient, predicate: Callable[[discord.Message], bool] = lambda m: True
) -> discord.Message:
    async with asyncio.timeout(TIMEOUT):
        while True:
            message = await client.inbox.get()
            if predicate(message):
                return message


def from_human(message: discord.Message) -> bool:
    return not message.author.bot


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, client: RecordingClient) -> AsyncIterator[RecordingClient]:
    restore = point_discord_py_at(fake)
    task: asyncio.Task[None] | None = None
    try:
        await client.login("fake-token")
        task = asyncio.create_task(client.connect())
        ready = asyncio.create_task(client.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()  # surface the connect() error
            raise AssertionError("on_ready did not fire")
        yield client
    finally:
        await client.close()
        if task is not None:
            await asyncio.wait_for(task, TIMEOUT)
        restore()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as f:
        yield f


def with_content() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


async def test_login_connect_and_guild_cache(fake: FakeDiscord) -> None:
    async with running(fake, RecordingClient(intents=discord.Intents.default())) as client:
        # login: GET /users/@me then GET /oauth2/applications/@me
        assert [(c.method, c.path, c.status) for c in fake.calls[:2]] == [
            ("GET", "/users/@me", 200),
            ("GET", "/oauth2/applications/@me", 200),
        ]
        assert fake.calls[0].authorization == "Bot fake-token"
        assert fake.gateway_connections[0] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
        identify = await fake.wait_for_identify()
        assert identify["token"] == "fake-token"
        assert identify["intents"] == discord.Intents.default().value
        await fake.wait_for(lambda: fake.heartbeats_received >= 1)

        assert client.user is not None and client.user.id == 1000 and client.user.bot
        assert client.application_id == 1000
        guild = client.get_guild(2000)
        assert guild is not None and not guild.unavailable and guild.name == "Test Guild"
        general = guild.get_channel(3000)
        assert isinstance(general, discord.TextChannel) and general.name == "general"
        category = guild.get_channel(2999)
        assert isinstance(category, discord.CategoryChannel)
        bot_chat = client.get_channel(3001)
        assert isinstance(bot_chat, discord.TextChannel) and bot_chat.category_id == 2999
        thread = guild.get_thread(3100)
        assert isinstance(thread, discord.Thread) and thread.parent_id == 3000
        assert guild.me is not None and guild.me.id == 1000
        assert guild.default_role.id == 2000 and guild.get_role(4000) is not None
        assert general.permissions_for(guild.me).send_messages


async def test_message_create_guild_and_dm_without_content_intent(fake: FakeDiscord) -> None:
    async with running(fake, RecordingClient(intents=discord.Intents.default())) as client:
        sent = await fake.send_message_create(channel_id="3001", content="secret")
        message = await next_message(client)
        assert message.id == int(sent["id"])
        assert message.channel.id == 3001 and message.guild is not None and message.guild.id == 2000
        assert isinstance(message.author, discord.Member) and message.author.id == 5000
        assert message.content == ""  # no message_content intent, bot not mentioned: redacted like Discord
        assert fake.messages[sent["id"]]["content"] == "secret"

        await fake.send_message_create(channel_id="3000", content="<@1000> hi", mentions=[fake.bot_user])
        mentioned = await next_message(client)
        assert mentioned.content == "<@1000> hi" and client.user in mentioned.mentions

        in_thread = await fake.send_message_create(channel_id="3100", content="threaded")
        message = await next_message(client)
        assert isinstance(message.channel, discord.Thread) and message.id == int(in_thread["id"])

        dm_id = fake.dm_channel_id("5000")
        await fake.send_message_create(channel_id=dm_id, content="hello dm")
        dm = await next_message(client)
        assert isinstance(dm.channel, discord.DMChannel) and dm.channel.id == int(dm_id)
        assert dm.guild is None and dm.author.id == 5000 and dm.content == "hello dm"

        reply = await dm.reply("hi in dm")
        assert [m["content"] for m in fake.bot_messages(dm_id)] == ["hi in dm"]
        assert reply.channel.id == int(dm_id)


async def test_reply_edit_and_rate_limit(fake: FakeDiscord) -> None:
    async with running(fake, RecordingClient(intents=with_content())) as client:
        sent = await fake.send_message_create(channel_id="3000", content="hello")
        message = await next_message(client)
        assert message.content == "hello" and message.author.name == "alice"

        reply = await message.reply("hi")
        [stored] = fake.bot_messages("3000")
        assert stored["id"] == str(reply.id) and stored["content"] == "hi" and stored["type"] == 19
        assert stored["message_reference"]["message_id"] == sent["id"]
        assert stored["referenced_message"]["content"] == "hello"
        assert reply.reference is not None and reply.reference.message_id == message.id
        echoed = await next_message(client, lambda m: m.author == client.user)  # Discord echoes own messages
        assert echoed.id == reply.id

        edited = await reply.edit(content="hi there")
        assert edited.content == "hi there" and fake.messages[str(reply.id)]["content"] == "hi there"
        assert fake.edit_counts[str(reply.id)] == 1

        path = f"/channels/3000/messages/{reply.id}"
        fake.fail_next("PATCH", path, retry_after=0.2)
        await reply.edit(content="final")  # discord.py sleeps retry_after and retries in place
        assert fake.rate_limited_count == 1
        assert fake.messages[str(reply.id)]["content"] == "final" and fake.edit_counts[str(reply.id)] == 2
        assert fake.content_history[str(reply.id)] == ["hi", "hi there", "final"]
        patches = fake.calls_matching("PATCH", path)
        assert [c.status for c in patches] == [200, 429, 200]
        assert patches[2].at - patches[1].at >= 0.19
        assert patches[1].json == patches[2].json and patches[2].json["content"] == "final"

        fake.fail_next("POST", "/channels/3000/messages", status=400, code=30046)
        with pytest.raises(discord.HTTPException) as err:
            await message.channel.send("nope")
        assert err.value.status == 400 and err.value.code == 30046

        with pytest.raises(discord.HTTPException) as err:
            await message.channel.send("x" * 2001)
        assert err.value.code == 50035

        await reply.delete()
        assert str(reply.id) not in fake.messages and fake.bot_messages("3000") == []

        async with message.channel.typing():
            pass
        assert fake.typing_channels == ["3000"]


async def test_slash_command_interaction(fake: FakeDiscord) -> None:
    client = RecordingClient(intents=discord.Intents.default())
    tree = app_commands.CommandTree(client)
    seen: dict[str, Any] = {}

    @tree.command(name="ping", description="Replies ok", guild=GUILD)
    async def ping(interaction: discord.Interaction) -> None:
        seen["ping"] = interaction
        await interaction.response.send_message("ok", ephemeral=True)

    @tree.command(name="slow", description="Defers, then answers", guild=GUILD)
    @app_commands.describe(question="what to ask")
    async def slow(interaction: discord.Interaction, question: str) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=f"answer to {question}")
        await interaction.followup.send("one more thing")

    async with running(fake, client):
        synced = await tree.sync(guild=GUILD)
        assert sorted(c.name for c in synced) == ["ping", "slow"]
        puts = fake.calls_matching("PUT", "/applications/1000/guilds/2000/commands")
        assert [c.status for c in puts] == [200]
        assert {c["name"] for c in fake.guild_commands["2000"]} == {"ping", "slow"}
        fetched = await tree.fetch_commands(guild=GUILD)
        assert {c.id for c in fetched} == {c.id for c in synced}

        payload = await fake.send_interaction(name="ping", channel_id="3000")
        iid = payload["id"]
        await fake.wait_for(lambda: iid in fake.interaction_callbacks)
        callback = fake.interaction_callbacks[iid]
        assert callback["type"] == 4
        assert callback["data"]["content"] == "ok" and callback["data"]["flags"] == 64
        [call] = fake.calls_matching("POST", f"/interactions/{iid}/")
        assert call.status == 200 and call.query == {"with_response": "1"}
        interaction = seen["ping"]
        assert interaction.guild_id == 2000 and interaction.channel_id == 3000 and interaction.user.id == 5000
        original = fake.interaction_original(iid)
        assert original is not None and original["content"] == "ok" and original["flags"] & 64

        payload = await fake.send_interaction(
            name="slow", channel_id="3001", options=[{"name": "question", "type": 3, "value": "life"}]
        )
        iid = payload["id"]
        await fake.wait_for(lambda: any("one more thing" == m["content"] for m in fake.bot_messages("3001")))
        assert fake.interaction_callbacks[iid]["type"] == 5
        original = fake.interaction_original(iid)
        assert original is not None and original["content"] == "answer to life"
        assert original["flags"] & 128 == 0  # the LOADING flag goes away with the edit
        assert fake.edit_counts[original["id"]] == 1
        assert [m["content"] for m in fake.bot_messages("3001")] == ["answer to life", "one more thing"]


async def test_members_intent_is_chunked(fake: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.members = True
    async with running(fake, RecordingClient(intents=intents)) as client:
        guild = client.get_guild(2000)
        assert guild is not None and guild.chunked and guild.member_count == 3
        assert any(p.get("op") == 8 for p in fake.gateway_received)
        alice = guild.get_member(5000)
        assert alice is not None and alice.name == "alice"


async def test_resume_after_disconnect(fake: FakeDiscord) -> None:
    async with running(fake, RecordingClient(intents=with_content())) as client:
        await fake.disconnect_clients(code=4000)
        await asyncio.wait_for(client.resumed.wait(), TIMEOUT)
        assert len(fake.identifies) == 1 and len(fake.resumes) == 1
        assert client.ws is not None and fake.resumes[0]["session_id"] == client.ws.session_id
        assert fake.resumes[0]["seq"] >= 2  # READY + GUILD_CREATE were seen before the drop
        await fake.send_message_create(channel_id="3000", content="after resume")
        message = await next_message(client, from_human)
        assert message.content == "after resume"


async def test_auto_sharded_client_uses_gateway_bot(fake: FakeDiscord) -> None:
    client = discord.AutoShardedClient(intents=discord.Intents.default(), guild_ready_timeout=0.1)
    ready = asyncio.Event()

    @client.event
    async def on_ready() -> None:
        ready.set()

    restore = point_discord_py_at(fake)
    try:
        await client.login("fake-token")
        task = asyncio.create_task(client.connect())
        await asyncio.wait_for(ready.wait(), TIMEOUT)
        assert fake.calls_matching("GET", "/gateway/bot")
        assert fake.identifies[0]["shard"] == [0, 1]
        assert client.get_channel(3000) is not None
    finally:
        await client.close()
        await asyncio.wait_for(task, TIMEOUT)
        restore()


async def test_raw_http_behaviour(fake: FakeDiscord) -> None:
    with pytest.raises(RuntimeError):
        await fake.dispatch("MESSAGE_CREATE", {})
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda: False, timeout=0.05)

    headers = {"Authorization": "Bot t"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{fake.api_base}/nope") as resp:
            assert resp.status == 404
            assert await resp.json() == {"message": "404: Not Found", "code": 0}

        fake.fail_next("*", "/users/@me", retry_after=1.5, global_=True)
        async with session.get(f"{fake.api_base}/users/@me") as resp:
            assert resp.status == 429
            assert resp.headers["Content-Type"] == "application/json" and resp.headers["Via"]
            assert resp.headers["Retry-After"] == "2" and resp.headers["X-RateLimit-Remaining"] == "0"
            assert resp.headers["X-RateLimit-Scope"] == "global"
            assert await resp.json() == {
                "message": "You are being rate limited.",
                "retry_after": 1.5,
                "global": True,
            }
        async with session.get(f"{fake.api_base}/users/@me") as resp:
            assert resp.status == 200 and (await resp.json())["id"] == "1000"
            assert "X-RateLimit-Bucket" in resp.headers

        async with session.post(f"{fake.api_base}/channels/999/messages", json={"content": "x"}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 10003

        async with session.get(f"{fake.api_base}/gateway/bot") as resp:
            assert (await resp.json())["url"] == fake.gateway_url

    assert [(c.method, c.path, c.status) for c in fake.calls] == [
        ("GET", "/nope", 404),
        ("GET", "/users/@me", 429),
        ("GET", "/users/@me", 200),
        ("POST", "/channels/999/messages", 404),
        ("GET", "/gateway/bot", 200),
    ]
    assert fake.rate_limited_count == 1


async def test_more_routes_and_bucket_limits() -> None:
    async with FakeDiscord(bucket_limit=2, bucket_window=0.3) as fake:
        async with running(fake, RecordingClient(intents=with_content())) as client:
            channel = client.get_channel(3000)
            assert isinstance(channel, discord.TextChannel)
            for i in range(3):  # the third send waits for the bucket to reset: no 429 needed
                await channel.send(f"m{i}")
            posts = fake.calls_matching("POST", "/channels/3000/messages")
            assert [c.status for c in posts] == [200, 200, 200] and fake.rate_limited_count == 0
            assert posts[2].at - posts[0].at >= 0.25

            first = await channel.fetch_message(int(fake.bot_messages("3000")[0]["id"]))
            assert first.content == "m0"
            assert [m.content async for m in channel.history(limit=10)] == ["m2", "m1", "m0"]
            await first.add_reaction("👍")
            assert fake.reactions[str(first.id)] == ["👍"]
            thread = await first.create_thread(name="discussion")
            assert thread.parent_id == 3000 and client.get_channel(thread.id) is not None
            await thread.send("in thread")
            assert [m["content"] for m in fake.bot_messages(str(thread.id))] == ["in thread"]

            with_file = await channel.send("file", file=discord.File(io.BytesIO(b"abc"), filename="a.txt"))
            assert [a.filename for a in with_file.attachments] == ["a.txt"]
            assert fake.calls[-1].files == ["a.txt"] and fake.calls[-1].json["content"] == "file"

            alice = await client.fetch_user(5000)
            dm = await alice.send("hello alice")
            assert dm.channel.id == int(fake.dm_channel_id("5000"))
            assert [m["content"] for m in fake.bot_messages(fake.dm_channel_id("5000"))] == ["hello alice"]
            assert fake.internal_errors == []


async def test_attachments_are_served_at_their_signed_urls(fake: FakeDiscord) -> None:
    """discord.py's own `Attachment.read()` downloads a test's file and a file the bot uploaded from
    the fake (127.0.0.1); the URL's signature is checked, like Discord's CDN."""
    async with running(fake, RecordingClient(intents=discord.Intents.default())) as client:
        png = fake.attachment("cat.png", b"\x89PNG-bytes", content_type="image/png", channel_id="3000")
        assert png["url"].startswith(f"http://127.0.0.1:{fake.port}/attachments/3000/{png['id']}/cat.png?ex=")
        await fake.send_message_create(channel_id="3000", content="<@1000> look", mentions=[fake.bot_user],
                                       attachments=[png])
        message = await next_message(client, from_human)
        [attachment] = message.attachments
        assert (attachment.filename, attachment.content_type, attachment.size) == ("cat.png", "image/png", 10)
        assert await attachment.read() == b"\x89PNG-bytes"
        assert fake.attachment_downloads == [f"/attachments/3000/{png['id']}/cat.png"]

        hidden = fake.attachment("secret.txt", b"s", content_type="text/plain", channel_id="3001")
        await fake.send_message_create(channel_id="3001", content="no mention", attachments=[hidden])
        redacted = await next_message(client, from_human)
        assert redacted.attachments == []  # no message-content intent: files are hidden too

        channel = client.get_channel(3000)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("file", file=discord.File(io.BytesIO(b"uploaded"), filename="up.txt"))
        assert await sent.attachments[0].read() == b"uploaded"

        async with aiohttp.ClientSession() as session:
            async with session.get(png["url"].split("?")[0]) as resp:  # unsigned
                assert resp.status == 404
            async with session.get(png["url"].replace("hm=", "hm=0")) as resp:  # bad signature
                assert resp.status == 404
        assert fake.calls_matching("GET", "/attachments/") == []  # downloads are not REST calls


class ReactionClient(RecordingClient):
    def __init__(self, *, intents: discord.Intents) -> None:
        super().__init__(intents=intents)
        self.reactions: asyncio.Queue[discord.RawReactionActionEvent] = asyncio.Queue()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.reactions.put(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.reactions.put(payload)


async def test_reaction_events(fake: FakeDiscord) -> None:
    """MESSAGE_REACTION_ADD / _REMOVE reach discord.py's raw reaction events, shaped like Discord's
    (member and message author on adds only), in guilds and DMs alike."""
    client = ReactionClient(intents=discord.Intents.default())
    async with running(fake, client):
        sent = await fake.send_message_create(channel_id="3000", content="react to me")
        await fake.send_reaction(channel_id="3000", message_id=sent["id"], emoji="👍🏽")
        async with asyncio.timeout(TIMEOUT):
            added = await client.reactions.get()
        assert added.event_type == "REACTION_ADD" and added.emoji.name == "👍🏽" and added.emoji.id is None
        assert (added.message_id, added.channel_id, added.guild_id, added.user_id) == (
            int(sent["id"]), 3000, 2000, 5000)
        assert added.member is not None and added.member.id == 5000 and added.message_author_id == 5000

        await fake.send_reaction(channel_id="3000", message_id=sent["id"], emoji="👍🏽", added=False)
        async with asyncio.timeout(TIMEOUT):
            removed = await client.reactions.get()
        assert removed.event_type == "REACTION_REMOVE" and removed.member is None
        assert removed.message_author_id is None

        dm = fake.dm_channel_id("5000")
        in_dm = await fake.send_message_create(channel_id=dm, content="dm")
        await fake.send_reaction(channel_id=dm, message_id=in_dm["id"], emoji="tada", emoji_id="42")
        async with asyncio.timeout(TIMEOUT):
            custom = await client.reactions.get()
        assert custom.guild_id is None and custom.emoji.id == 42 and custom.emoji.name == "tada"
        with pytest.raises(KeyError):
            await fake.send_reaction(channel_id="3001", message_id=sent["id"], emoji="👍")


async def test_reactions_need_their_intents(fake: FakeDiscord) -> None:
    """Without the reaction intents the events are not sent at all."""
    intents = with_content()
    intents.reactions = False
    client = ReactionClient(intents=intents)
    async with running(fake, client):
        sent = await fake.send_message_create(channel_id="3000", content="react to me")
        await fake.send_reaction(channel_id="3000", message_id=sent["id"], emoji="👍")
        # Events are handled in order: once a later message arrived, a reaction event would have too.
        await fake.send_message_create(channel_id="3000", content="marker")
        await next_message(client, lambda m: m.content == "marker")
        assert client.reactions.empty()
