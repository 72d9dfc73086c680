"""The invoker's pure parts: event decoding, result encoding, log capture, wire frames."""

from __future__ import annotations

import asyncio

import pytest

from invoker.context import Capture, Response
from invoker.protocol import HEADER, ProtocolError, encode_frame, read_frame
from invoker.runtime import decode_event, encode_result


def test_decode_event() -> None:
    assert decode_event(b'{"a": 1}', "application/json") == {"a": 1}
    assert decode_event(b'{"a": 1}', "application/cloudevents+json; charset=utf-8") == {"a": 1}
    assert decode_event(b"\x00raw", "application/octet-stream") == b"\x00raw"
    assert decode_event(b"", "") == {}


def test_encode_result() -> None:
    assert encode_result({"a": 1}) == (200, [["Content-Type", "application/json"]], b'{"a":1}')
    assert encode_result("hi")[1:] == ([["Content-Type", "text/plain; charset=utf-8"]], b"hi")
    assert encode_result(b"\x01")[2] == b"\x01"
    status, headers, body = encode_result(
        Response(body="<p>", status=201, headers={"Content-Type": "text/html"})
    )
    assert (status, headers, body) == (201, [["Content-Type", "text/html"]], b"<p>")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        encode_result({"x": object()})
    with pytest.raises(ValueError, match="200-599"):
        encode_result(Response(status=42))
    with pytest.raises(ValueError, match="200-599"):  # no protocol switch through a proxy
        encode_result(Response(status=101))


def test_capture_truncates() -> None:
    capture = Capture(max_bytes=10)
    capture.write("12345")
    capture.write("67890")
    capture.write("more")
    assert capture.text() == "1234567890\n[logs truncated at 10 bytes]\n"


async def test_frames_round_trip_and_reject_garbage() -> None:
    reader = asyncio.StreamReader()
    for part in encode_frame({"op": "invoke", "id": "x"}, b"\x00body"):
        reader.feed_data(part)
    assert await read_frame(reader) == ({"op": "invoke", "id": "x"}, b"\x00body")

    reader = asyncio.StreamReader()
    reader.feed_data(HEADER.pack(1 << 30, 0))
    with pytest.raises(ProtocolError, match="too large"):
        await read_frame(reader)

    reader = asyncio.StreamReader()
    reader.feed_data(HEADER.pack(10, 0) + b"{}")
    reader.feed_eof()
    with pytest.raises(ProtocolError, match="middle of a frame"):
        await read_frame(reader)


def test_the_gateway_keeps_no_more_logs_than_the_runtime_captures() -> None:
    """An instance can write its own reply frame on its connection (it is its process); what
    it claims as logs is cut where the runtime's capture would have cut it."""
    from calls.execute import MAX_LOG_CHARS, capped

    stored = capped("L" * (1 << 20) + "\x00")
    assert len(stored) < MAX_LOG_CHARS + 100
    assert stored.endswith(f"[truncated at {MAX_LOG_CHARS} characters]\n")
    assert capped("short\x00") == "short\\0"
    assert capped(12) == "12"
