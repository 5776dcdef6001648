"""The V2 API (``client.v2``, sync and async) refuses options as every other path does:
an unknown one is ``InvalidArguments`` before anything is sent (it was a raw
``TypeError``), and an anonymous call cannot be given a session."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from snakepool import AsyncClient, Client
from snakepool.errors import InvalidArguments

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: Nothing answers here: a request that got as far as sending would fail otherwise.
NOWHERE = "redis://127.0.0.1:1/0"
FORGED = ["shadow_id", "shadow_role", "affinity", "transient", "task_id", "headers", "queue"]


@pytest.mark.parametrize("option", FORGED)
def test_unknown_options_of_the_v2_api_are_invalid_arguments(option: str) -> None:
    client = Client(redis_url=NOWHERE)
    try:
        with pytest.raises(InvalidArguments, match=f"unknown option.*'{option}'"):
            client.v2.execute_in_session("s-1", "ping", {}, **{option: "counts"})
        with pytest.raises(InvalidArguments, match=f"unknown option.*'{option}'"):
            client.v2.execute_anonymous("ping", {}, **{option: "counts"})
        with pytest.raises(InvalidArguments, match="outside any session"):
            client.v2.execute_anonymous("ping", {}, session_id="s-1")
    finally:
        client.close()


@pytest.mark.parametrize("option", FORGED)
def test_unknown_options_of_the_async_v2_api_are_invalid_arguments(option: str) -> None:
    async def calls() -> None:
        client = AsyncClient(redis_url=NOWHERE)
        try:
            with pytest.raises(InvalidArguments, match=f"unknown option.*'{option}'"):
                await client.v2.execute_in_session("s-1", "ping", {}, **{option: "counts"})
            with pytest.raises(InvalidArguments, match=f"unknown option.*'{option}'"):
                await client.v2.execute_anonymous("ping", {}, **{option: "counts"})
            with pytest.raises(InvalidArguments, match="outside any session"):
                await client.v2.execute_anonymous("ping", {}, session_id="s-1")
        finally:
            await client.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.run(calls())
