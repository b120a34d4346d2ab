"""Server-sent events read from a body's chunks however the network cut them (providers.adapters.transport)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from providers.adapters.base import ErrorKind, Timeouts, UpstreamError
from providers.adapters.transport import SSEEvent, sse_events

TIMEOUTS = Timeouts(connect=1.0, first_token=1.0, idle=0.2)


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], *, stall: float = 0.0) -> None:
        self.chunks, self.stall = chunks, stall
        self.read = 0

    async def __aiter__(self):
        for chunk in self.chunks:
            self.read += 1
            yield chunk
        if self.stall:
            await asyncio.sleep(self.stall)


async def events(chunks: list[bytes], **kwargs) -> list[SSEEvent]:
    response = httpx.Response(200, stream=Chunks(chunks, **kwargs))
    return [event async for event in sse_events(response, TIMEOUTS, "test")]


BODY = (b": comment\r\nevent: delta\r\ndata: {\"a\": 1}\r\n\r\n"
        b"data: line one\ndata:line two\n\n"
        b"data: cr\r\r"
        b"data: [DONE]\n\n")
EXPECTED = [SSEEvent("delta", '{"a": 1}'), SSEEvent("message", "line one\nline two"), SSEEvent("message", "cr"),
            SSEEvent("message", "[DONE]")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(BODY)])
async def test_events_are_the_same_however_the_body_is_cut(size):
    chunks = [BODY[i:i + size] for i in range(0, len(BODY), size)]
    assert await events(chunks) == EXPECTED


async def test_a_crlf_split_between_two_reads_ends_one_line():
    assert await events([b"data: x\r", b"\n\r", b"\ndata: y\n\n"]) == [SSEEvent("message", "x"),
                                                                        SSEEvent("message", "y")]


async def test_an_event_cut_off_by_the_end_of_the_body_is_still_given():
    assert await events([b"data: first\n\ndata: last"]) == [SSEEvent("message", "first"),
                                                            SSEEvent("message", "last")]


async def test_a_multibyte_character_split_between_reads_arrives_whole():
    body = 'data: "héllo ☃"\n\n'.encode()
    cut = body.index("☃".encode()) + 1
    assert await events([body[:cut], body[cut:]]) == [SSEEvent("message", '"héllo ☃"')]


async def test_the_rest_of_the_body_after_done_is_read_so_the_connection_can_be_reused():
    stream = Chunks([b"data: [DONE]\n\n", b"", b""])
    response = httpx.Response(200, stream=stream)
    async for _event in sse_events(response, TIMEOUTS, "test"):
        break
    assert stream.read == 3


async def test_silence_longer_than_idle_between_reads_is_a_timeout():
    with pytest.raises(UpstreamError) as raised:
        await events([b"data: one\n\n"], stall=1.0)
    assert raised.value.kind == ErrorKind.TIMEOUT
