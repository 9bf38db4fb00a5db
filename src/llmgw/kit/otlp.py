"""OTLP/HTTP export of lean spans: the protobuf written by hand, sent over one kept-alive connection.

Why not the SDK's ``OTLPSpanExporter``: it needs the SDK's ``ReadableSpan`` (2.5 µs a span to build)
and encodes through the generated message classes (about 17 µs a span measured on this project's
machine), all in the traced service's own process, holding the GIL its event loop needs. Here a
span is encoded from the lean span's plain values into the wire format directly (about a fifth of
that), and what every span repeats is encoded once: the resource and scope per exporter, each
(key, value) attribute pair and span name the first time it is seen (a bounded memo: attribute
values on this path are route, tenant, model, status names, few and repeated).

The wire format is OTLP's ``ExportTraceServiceRequest`` (opentelemetry-proto, trace/v1); the test
decodes it with the official generated classes and compares it with the SDK encoder's output.

Settings are the standard ones, read as the Python SDK reads them: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces`` (default ``http://localhost:4318``),
``..._HEADERS`` (``k=v,k2=v2``, URL-encoded), ``..._TIMEOUT`` (seconds, 10), ``..._COMPRESSION``
(``gzip`` or none), ``..._CERTIFICATE`` / ``..._CLIENT_CERTIFICATE`` / ``..._CLIENT_KEY`` for TLS; each
with its ``TRACES_`` form taking precedence. A transient refusal (429, 502, 503, 504, a dropped
connection) is retried with backoff until the timeout; anything else fails the batch, which the
span queue counts as dropped.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import ssl
import struct
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from llmgw.kit.spans import _UNSET, LeanExporter, LeanSpan

__all__ = ["OtlpEncoder", "OtlpHttpExporter", "otlp_settings"]

log = logging.getLogger(__name__)
_FIXED64 = struct.Struct("<Q")
_TIMES = struct.Struct("<BQBQ")  # start (field 7) and end (field 8), fixed64 each, with their tags
_DOUBLE = struct.Struct("<d")
_MEMO_LIMIT = 4096
_RETRYABLE = {429, 502, 503, 504}
# Field 16 (fixed32) SpanFlags: the context's is-remote bit is known (0x100); the parent is remote (0x200).
_LOCAL_FLAGS, _REMOTE_FLAGS = b"\x85\x01" + struct.pack("<I", 0x100), b"\x85\x01" + struct.pack("<I", 0x300)
# Field 6, the kind: the API's kinds count from 0, OTLP's from 1 (0 is "unspecified").
_KIND = {k: bytes((0x30, k.value + 1)) for k in SpanKind}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, bytes."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message's body."""
    if isinstance(value, str):
        return _ld(1, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement in 10 bytes
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _ld(7, value)
    if isinstance(value, Mapping):
        return _ld(6, b"".join(_ld(1, _key_value(str(k), v)) for k, v in value.items()))
    if isinstance(value, Iterable):
        return _ld(5, b"".join(_ld(1, _any_value(v)) for v in value))
    return b"" if value is None else _ld(1, str(value).encode())


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message's body."""
    return _ld(1, key.encode()) + _ld(2, _any_value(value))


class OtlpEncoder:
    """Lean spans -> one ``ExportTraceServiceRequest``, for one resource and one scope."""

    def __init__(self, resource: Mapping[str, Any], scope_name: str, scope_version: str = "") -> None:
        self._resource = _ld(1, b"".join(_ld(1, _key_value(k, v)) for k, v in resource.items()))
        self._scope = _ld(1, _ld(1, scope_name.encode()) + (_ld(2, scope_version.encode()) if scope_version else b""))
        # Encoded attribute fields of a span (field 9 of Span, or 3 of Event: same bytes past the
        # tag) and names, by what they encode; cleared when full (values are few on this path).
        self._pairs: dict[tuple[str, type, Any], bytes] = {}
        self._names: dict[str, bytes] = {}

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Every attribute as a ``KeyValue`` field with the one-byte ``tag`` (field 9 of a Span, 3 of
        an Event)."""
        memo, out = self._pairs, list[bytes]()
        for k, v in attributes.items():
            # The type too: 1, 1.0 and True are equal keys, and encode differently.
            key: tuple[str, type, Any] | None = (k, type(v), tuple(v) if type(v) is list else v)
            try:
                enc = memo.get(key)  # type: ignore[arg-type]
            except TypeError:  # an unhashable value (a mapping): not memoised
                key, enc = None, None
            if enc is None:
                enc = _ld(1, _key_value(k, v))[1:]  # the body without field 1's tag byte
                if key is not None:
                    if len(memo) >= _MEMO_LIMIT:
                        memo.clear()
                    memo[key] = enc
            out += (tag, enc)
        return b"".join(out)

    def _name(self, name: str) -> bytes:
        enc = self._names.get(name)
        if enc is None:
            if len(self._names) >= _MEMO_LIMIT:
                self._names.clear()
            enc = self._names[name] = _ld(5, name.encode())
        return enc

    def span(self, s: LeanSpan) -> bytes:
        """One ``Span`` message's body."""
        parent = s._parent
        if isinstance(parent, LeanSpan):
            parent_id, remote = parent.span_id, False
        elif parent is not None:
            parent_id, remote = parent.span_id, parent.is_remote
        else:
            parent_id, remote = 0, False
        parts = [b"\x0a\x10", s.trace_id.to_bytes(16, "big"), b"\x12\x08", s.span_id.to_bytes(8, "big")]
        if s._trace_state:
            parts.append(_ld(3, s._trace_state.to_header().encode()))
        if parent_id:
            parts += (b"\x22\x08", parent_id.to_bytes(8, "big"))
        parts += (self._name(s.name), _KIND[s._kind], _TIMES.pack(0x39, s._start, 0x41, s._end))
        if s._attributes:
            parts.append(self._attributes(b"\x4a", s._attributes))
        if s._events:
            for name, attrs, at in s._events:
                body = b"\x09" + _FIXED64.pack(at) + _ld(2, name.encode())
                if attrs:
                    body += self._attributes(b"\x1a", attrs)
                parts.append(_ld(11, body))
        status = s._status
        if status is _UNSET:
            parts.append(b"\x7a\x00")  # an empty Status, present as the SDK's encoder writes it
        else:
            code = status.status_code.value
            body = (_ld(2, status.description.encode()) if status.description else b"") + (
                b"\x18" + _varint(code) if code else b"")
            parts.append(_ld(15, body))
        parts.append(_REMOTE_FLAGS if remote else _LOCAL_FLAGS)
        return b"".join(parts)

    def request(self, spans: Sequence[LeanSpan]) -> bytes:
        """The ``ExportTraceServiceRequest`` holding every span (one resource, one scope)."""
        body = b"".join(_ld(2, self.span(s)) for s in spans)
        scope_spans = _ld(2, self._scope + body)
        return _ld(1, self._resource + scope_spans)




def _setting(environ: Mapping[str, str], name: str, default: str = "") -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``, else ``default``."""
    return (environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(f"OTEL_EXPORTER_OTLP_{name}")
            or default).strip()


def otlp_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The OTLP/HTTP trace export settings from the standard variables (see the module's doc)."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
        endpoint = f"{base.removesuffix('/')}/v1/traces"
    headers = {}
    for item in _setting(environ, "HEADERS").split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers[urllib.parse.unquote(name.strip()).lower()] = urllib.parse.unquote(value.strip())
    try:
        timeout = float(_setting(environ, "TIMEOUT", "10"))
    except ValueError:
        log.warning("OTEL_EXPORTER_OTLP_TIMEOUT is not a number of seconds: using 10")
        timeout = 10.0
    compression = _setting(environ, "COMPRESSION", "none").lower()
    if compression not in ("gzip", "none"):
        log.warning("OTLP compression %r is not supported (gzip, none): sending uncompressed", compression)
        compression = "none"
    return {"endpoint": endpoint, "headers": headers, "timeout": timeout, "gzip": compression == "gzip",
            "certificate": _setting(environ, "CERTIFICATE"), "client_key": _setting(environ, "CLIENT_KEY"),
            "client_certificate": _setting(environ, "CLIENT_CERTIFICATE")}


class OtlpHttpExporter(LeanExporter):
    """POSTs each batch to the collector's OTLP/HTTP traces endpoint (protobuf), in the span queue's
    thread, over one connection kept open between batches."""

    def __init__(self, resource: Mapping[str, Any], environ: Mapping[str, str], scope: str = "llmgw") -> None:
        self._encoder = OtlpEncoder(resource, scope)
        settings = otlp_settings(environ)
        url = urllib.parse.urlsplit(settings["endpoint"])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT: not an http(s) URL: {settings['endpoint']!r}")
        self.endpoint = settings["endpoint"]
        self._host, self._port, self._tls = url.hostname, url.port, url.scheme == "https"
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._timeout, self._gzip = settings["timeout"], settings["gzip"]
        self._headers = {"content-type": "application/x-protobuf", **settings["headers"]}
        if self._gzip:
            self._headers["content-encoding"] = "gzip"
        self._context: ssl.SSLContext | None = None
        if self._tls:
            self._context = ssl.create_default_context(cafile=settings["certificate"] or None)
            if settings["client_certificate"]:
                self._context.load_cert_chain(settings["client_certificate"], settings["client_key"] or None)
        self._conn: http.client.HTTPConnection | None = None
        self._stopped = False

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                         context=self._context)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def export_lean(self, spans: Sequence[LeanSpan]) -> bool:
        body = self._encoder.request(spans)
        if self._gzip:
            body = gzip.compress(body, compresslevel=5)
        deadline, delay = time.monotonic() + self._timeout, 0.5
        while not self._stopped:
            try:
                conn = self._connection()
                conn.request("POST", self._path, body, self._headers)
                reply = conn.getresponse()
                reply.read()  # the connection is reused only once the reply is read
                if 200 <= reply.status < 300:
                    return True
                if reply.status not in _RETRYABLE:
                    log.warning("the OTLP collector refused %d spans: HTTP %d", len(spans), reply.status)
                    return False
            except (OSError, http.client.HTTPException):
                self._close()  # a dropped or half-read connection is not reused
            if time.monotonic() + delay > deadline:
                log.warning("the OTLP collector at %s did not take %d spans within %.0f s", self.endpoint,
                            len(spans), self._timeout)
                return False
            time.sleep(delay)
            delay *= 2
        return False

    def shutdown(self) -> None:
        self._stopped = True
        self._close()
