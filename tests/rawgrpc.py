"""A gRPC call over a raw HTTP/2 connection (the ``h2`` package), for what the grpc client
library refuses to send: header values with control or non-ASCII bytes, bodies that don't parse.
It is how a hostile or broken client reaches the server, so tests can see what the server does."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

__all__ = ["RawReply", "raw_call"]


@dataclass
class RawReply:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    messages: list[bytes] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int((self.trailers.get(b"grpc-status") or self.headers.get(b"grpc-status") or b"-1").decode())

    @property
    def message(self) -> str:
        from urllib.parse import unquote

        raw = self.trailers.get(b"grpc-message") or self.headers.get(b"grpc-message") or b""
        return unquote(raw.decode(errors="replace"))


async def raw_call(address: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]], *,
                   timeout_s: float = 10.0) -> RawReply:
    """One unary or server-streaming call; ``body`` is the serialized request (framed here)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                            (b":authority", address.encode()), (b"content-type", b"application/grpc"),
                            (b"te", b"trailers"), *headers])
    conn.send_data(sid, b"\x00" + struct.pack(">I", len(body)) + body, end_stream=True)
    writer.write(conn.data_to_send())
    reply = RawReply()
    buffer = b""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                data = await reader.read(65536)
                if not data:
                    return reply
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        reply.headers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        buffer += event.data
                        while len(buffer) >= 5 and len(buffer) >= 5 + struct.unpack(">I", buffer[1:5])[0]:
                            n = struct.unpack(">I", buffer[1:5])[0]
                            reply.messages.append(buffer[5 : 5 + n])
                            buffer = buffer[5 + n :]
                    elif isinstance(event, h2.events.TrailersReceived):
                        reply.trailers = dict(event.headers)
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        return reply
                writer.write(conn.data_to_send())
    finally:
        writer.close()
