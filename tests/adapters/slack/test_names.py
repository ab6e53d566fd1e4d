"""`UserNames`: display names from users.info, looked up once per person and cached."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.names import UserNames
from tests.fakes.slack_api import FakeSlackAPI


class TestUserNames:
    """Names for multi-user prompts."""

    async def test_one_lookup_per_person(self) -> None:
        """Twenty simultaneous asks for one person cost one users.info call; later asks none."""
        async with FakeSlackAPI() as fake:
            fake.add_user("U2", display_name="ada", real_name="Ada Lovelace")
            names = UserNames(AsyncWebClient(token=fake.bot_token, base_url=fake.base_url))
            found = await asyncio.gather(*(names.name("U2") for _ in range(20)))
            assert set(found) == {"ada"}
            assert await names.names(["U2", "U2"]) == {"U2": "ada"}
            assert len(fake.calls_to("users.info")) == 1

    async def test_fallbacks(self) -> None:
        """No display name: the real name; a failed lookup: the id (and it is asked again later)."""
        async with FakeSlackAPI() as fake:
            fake.add_user("U3", real_name="Bo Berg", display_name="")
            names = UserNames(AsyncWebClient(token=fake.bot_token, base_url=fake.base_url))
            assert await names.name("U3") == "Bo Berg"
            fake.fail_next("users.info", status=200, error="user_not_found")
            assert await names.name("U4") == "U4"
            assert await names.name("U4") == "useru4"
