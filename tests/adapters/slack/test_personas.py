"""`/lunos`: a channel's own model, fallbacks or system prompt, set by an admin (listed in the bot's
definition, or a Slack workspace admin or owner), shown by `help`, answered ephemerally through the
command's response_url, with every mention made inert.

Real slack-bolt (HTTP mode and Socket Mode) against FakeSlackAPI, which sends the signed command and
serves its response_url; real Redis; the fake chat API records which model and prompt a turn used.
"""

from __future__ import annotations

from typing import Any

from core.personas import USAGE
from core.profile import PersonaPolicy
from core.types import ConversationKey
from tests.adapters.slack.conftest import MODEL_A, MODEL_B, RigFactory, SlackRig
from tests.fakes.chat_api import FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI

MODEL_C = "test/model-c"  # allowed for personas only
POLICY = {"personas": PersonaPolicy(admins=("UADMIN",), allowed_models=(MODEL_C,))}
DEFAULT_PROMPT = "You are a test bot."  # tests.conftest.make_profile


def sent(chat_api: FakeChatAPI) -> dict[str, Any]:
    body = chat_api.requests[-1].body
    assert body is not None
    return body


async def ask(rig: SlackRig, chat_api: FakeChatAPI, channel: str = "C1") -> tuple[str, str]:
    """A mention in `channel`: (the model it was sent to, the system prompt it carried)."""
    await rig.mention("<@UBOT> hello", channel=channel)
    body = sent(chat_api)
    return str(body["model"]), str(body["messages"][0]["content"])


class TestWhoMayChange:
    """Changes need an admin; everyone may look."""

    async def test_a_non_admin_is_refused(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A plain member's `set` changes nothing (Slack said: not an admin), and is told so."""
        async with slack_rig(profile=POLICY) as rig:
            answer = await rig.command(f"set model {MODEL_B}", user="U2")
            assert answer.startswith("Only an admin can change this channel's persona")
            assert rig.fake.calls_to("users.info")[-1].args["user"] == "U2"
            assert await ask(rig, chat_api) == (MODEL_A, DEFAULT_PROMPT)

    async def test_a_listed_admin_sets_the_model(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """An admin named in the definition needs no lookup; the next mention in that channel (a new
        thread) uses the model, another channel keeps the bot's own."""
        async with slack_rig(profile=POLICY) as rig:
            answer = await rig.command(f"set model {MODEL_C}", user="UADMIN")
            assert answer == f"Done — in this channel I now answer with `{MODEL_C}`."
            assert rig.fake.calls_to("users.info") == []
            assert (await ask(rig, chat_api))[0] == MODEL_C
            assert (await ask(rig, chat_api, channel="C2"))[0] == MODEL_A

    async def test_a_workspace_admin_sets_the_prompt(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """users.info's is_admin (or is_owner) is enough; the prompt reaches the model as typed."""
        async with slack_rig(profile=POLICY) as rig:
            rig.fake.add_user("UWS", is_admin=True)
            rig.fake.add_user("UOWN", is_owner=True)
            answer = await rig.command("set prompt Answer like a pirate.\nKeep it short.", user="UWS")
            assert answer == "Done — this channel has its own system prompt now."
            assert await ask(rig, chat_api) == (MODEL_A, "Answer like a pirate.\nKeep it short.")
            assert (await rig.command(f"set fallbacks {MODEL_C}", user="UOWN")).startswith("Done")
            assert sent(chat_api)["model"] == MODEL_A  # fallbacks only change the chain

    async def test_a_failed_lookup_is_not_an_admin(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """users.info failing means "not an admin", and is asked again next time (not remembered)."""
        async with slack_rig(profile=POLICY) as rig:
            rig.fake.add_user("UWS", is_admin=True)
            rig.fake.fail_next("users.info", status=200, error="user_not_found")
            assert (await rig.command(f"set model {MODEL_C}", user="UWS")).startswith("Only an admin")
            assert (await rig.command(f"set model {MODEL_C}", user="UWS")).startswith("Done")
            assert (await rig.command("unset model", user="UWS")).startswith("Done")
            assert len(rig.fake.calls_to("users.info")) == 2  # the success is remembered briefly

    async def test_show_and_help_need_no_lookup(self, slack_rig: RigFactory) -> None:
        async with slack_rig(profile=POLICY) as rig:
            assert await rig.command("show", user="U2") == "This channel uses my own settings (model `test/model-a`)."
            assert USAGE in await rig.command("help", user="U2")
            assert rig.fake.calls_to("users.info") == []


class TestValidationAndReset:
    """Core's checks, as a Slack user meets them."""

    async def test_a_model_not_allowed_is_refused(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        async with slack_rig(profile=POLICY) as rig:
            answer = await rig.command("set model evil/model", user="UADMIN")
            assert answer.startswith("`evil/model` is not allowed for this bot. Allowed:")
            assert MODEL_C in answer
            assert (await ask(rig, chat_api))[0] == MODEL_A

    async def test_unset_clears(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """`unset all` brings back the bot's own model and prompt."""
        async with slack_rig(profile=POLICY) as rig:
            await rig.command(f"set model {MODEL_C}", user="UADMIN")
            await rig.command("set prompt Be terse.", user="UADMIN")
            assert await ask(rig, chat_api) == (MODEL_C, "Be terse.")
            assert await rig.command("unset all", user="UADMIN") == "Done — this channel uses my own settings again."
            assert await ask(rig, chat_api) == (MODEL_A, DEFAULT_PROMPT)


class TestHelpAndAnswers:
    """What the user sees: ephemeral, Markdown, mentions inert."""

    async def test_help_shows_the_persona(self, slack_rig: RigFactory) -> None:
        """`/lunos` alone is the help text with this channel's persona, then the persona commands."""
        async with slack_rig(profile=POLICY) as rig:
            await rig.command(f"set model {MODEL_C}", user="UADMIN")
            shown = await rig.command("")
            assert shown == (await rig.engine.help_for(_channel(rig, "C1"))
                             + "\n\nPersona commands for this channel:\n" + USAGE)
            assert f"This channel's persona: model `{MODEL_C}`" in shown
            assert "This channel's persona" not in await rig.command("help", channel="C2")

    async def test_answers_are_ephemeral_markdown_with_mentions_inert(self, slack_rig: RigFactory) -> None:
        """A prompt holding `<!channel>` (escaped as Slack sends it) is echoed by `show` without the
        live token, in an ephemeral markdown block; the command itself is acked with an empty 200."""
        async with slack_rig(profile=POLICY) as rig:
            await rig.command("set prompt Always say &lt;!channel&gt; and <@U2>.", user="UADMIN")
            fields = rig.fake.slash_command("show")
            assert await rig.post_command(fields) == 200
            await rig.bot.wait_idle()
            (answer,) = rig.fake.responses_to(fields)
            assert answer.body["response_type"] == "ephemeral"
            assert answer.body["blocks"][0]["type"] == "markdown"
            assert "&lt;\u200b!channel&gt;" in answer.text and "&lt;!channel" not in answer.text
            assert "<@" not in answer.text and "@U2" in answer.text  # mentions read as plain names

    async def test_socket_mode(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Over Socket Mode the envelope is acked and the answer goes to the response_url."""
        async with FakeSlackAPI() as fake, slack_rig(fake=fake, app_token=fake.app_token,
                                                     profile=POLICY) as rig:
            fields = fake.slash_command(f"set model {MODEL_C}", user="UADMIN")
            ack = await fake.wait_for_ack(await fake.send_socket_event(fields, envelope_type="slash_commands"))
            assert "payload" not in ack or not ack["payload"]
            await rig.bot.wait_idle()
            (answer,) = fake.responses_to(fields)
            assert answer.text.startswith("Done")
            payload = rig.mention_payload("<@UBOT> hi")
            await fake.wait_for_ack(await fake.send_socket_event(payload))
            await rig.bot.wait_idle()
            assert sent(chat_api)["model"] == MODEL_C


def _channel(rig: SlackRig, channel: str) -> ConversationKey:
    return ConversationKey("slack", rig.fake.team_id, channel)
