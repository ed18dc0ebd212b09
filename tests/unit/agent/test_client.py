"""The async client over an in-memory stream to a simulated agent (no sockets): what it
tells people when it adapts to an old agent, and the no-reply and unsupported paths."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from qgadash.agent.client import AgentClient, NoReplyOutcome
from qgadash.agent.errors import AgentTimeout, AgentUnsupported
from qgadash.agent.session import IDS_REFUSED_NOTE, AgentTraits, IdMode
from qgadash.sim.agent import GuestAgent
from qgadash.sim.profiles import Era, era_profile
from tests.unit.memory_stream import MemoryStream


def old_agent(era: Era = Era.QGA_1_2) -> GuestAgent:
    return GuestAgent(era_profile(era, 1))


async def test_an_agent_that_refuses_ids_is_answered_and_the_client_says_why() -> None:
    client = AgentClient(MemoryStream(old_agent()))
    assert await client.call("guest-ping", timeout=1.0) == {}
    assert client.note == IDS_REFUSED_NOTE
    assert client.traits.ids is IdMode.REFUSED


async def test_a_timeout_after_adapting_says_what_was_adapted_first() -> None:
    """The row then reads "agent too old for request ids; retrying without; then no
    reply ...", not a bare timeout."""
    client = AgentClient(MemoryStream(old_agent(), answers=1))
    with pytest.raises(AgentTimeout) as caught:
        await client.call("guest-ping", timeout=0.3)
    assert str(caught.value).startswith(f"{IDS_REFUSED_NOTE}; then no reply to the sync")


async def test_a_no_reply_command_on_a_fresh_channel_goes_out_after_its_sync() -> None:
    agent = old_agent()
    stream = MemoryStream(agent)
    client = AgentClient(stream, traits=AgentTraits(ids=IdMode.REFUSED))
    outcome = await asyncio.wait_for(client.call_no_reply("guest-suspend-ram", grace=0.2), 5)
    assert outcome is NoReplyOutcome.NO_ERROR
    assert b"guest-suspend-ram" in stream.written


async def test_shutdown_closing_the_channel_is_reported_as_such() -> None:
    client = AgentClient(MemoryStream(old_agent(Era.QGA_7_2)))
    outcome = await client.call_no_reply("guest-shutdown", {"mode": "powerdown"}, grace=1.0)
    assert outcome is NoReplyOutcome.CHANNEL_CLOSED


async def test_a_command_the_agent_lacks_is_not_sent_even_when_nothing_was_polled() -> None:
    stream = MemoryStream(old_agent())
    client = AgentClient(stream)
    with pytest.raises(AgentUnsupported) as caught:
        await client.call("guest-fsfreeze-freeze-list", {"mountpoints": ["/"]}, timeout=1.0)
    assert "qemu-ga 1.2.0" in str(caught.value) and "it came with qemu-ga 2.2" in str(caught.value)
    assert caught.value.request_sent is False and caught.value.not_found
    assert b"guest-fsfreeze-freeze-list" not in stream.written
    assert b"guest-info" in stream.written  # asked first, since nothing was known


async def test_what_an_endpoint_learnt_spares_the_next_connection_the_probe() -> None:
    traits = AgentTraits()
    first = MemoryStream(old_agent())
    await AgentClient(first, traits=traits).call("guest-ping", timeout=1.0)
    again = MemoryStream(old_agent())
    await AgentClient(again, traits=traits).call("guest-ping", timeout=1.0)
    assert first.written.count(b"guest-sync-delimited") == 2  # the probe, refused; then plain
    assert again.written.count(b"guest-sync-delimited") == 1
    assert b'"id":' not in bytes(again.written).replace(b'"arguments":{"id":', b"")


async def test_qemu_ga_1_0_is_synced_with_guest_sync_and_its_info_read() -> None:
    client = AgentClient(MemoryStream(old_agent(Era.QGA_1_0)))
    info = await client.call("guest-info", timeout=1.0)
    assert info == {"version": "1.0"}
    assert client.traits.delimited_sync is False


def test_profiles_of_old_eras_keep_their_guests_files() -> None:
    profile = era_profile(Era.QGA_2_5, 1)
    assert dataclasses.replace(profile).files


async def test_an_empty_batch_is_answered_at_once_and_the_channel_stays_usable() -> None:
    """Found by mutation testing: a session in sync took an empty batch, sent nothing
    and waited for a reply that never comes (the call timed out, the next one broke)."""
    client = AgentClient(MemoryStream(GuestAgent(era_profile(Era.QGA_7_2, 1))))
    assert await client.call("guest-ping", timeout=1.0) == {}  # in sync now
    assert await client.call_many([], timeout=1.0) == []
    assert await client.call_many_raw([], timeout=1.0) == []
    assert await client.call("guest-ping", timeout=1.0) == {}
