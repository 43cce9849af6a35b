"""HTTP connections a client cannot hold for nothing: uvicorn's own protocol, with a deadline for a
request's headers, a cap on open connections, and JSON for the errors it answers itself.

Why: uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but any byte
received cancels that timer and nothing bounds how long a request's headers may take, so clients
that send part of a request and wait (slowloris) keep their connections for ever: 1,100 of them
used up a 1,024 open-files limit and every new request failed (issue 28). Here:

* a request's headers must arrive whole within ``header_timeout`` seconds of the connection
  opening (or of the previous response ending), however slowly they trickle in, and within
  MAX_HEADER_BYTES; else the answer is 408 (or 431) and the connection is closed;
* past ``max_connections`` open connections a new one is answered 503 and closed at once, so the
  server's descriptors stay below the process limit and the others keep being served;
* uvicorn's own "Invalid HTTP request" 400 is JSON, like every error of the app.

`zscrgan serve` passes ``http="zscrgan.search.connections:GuardedProtocol"`` to uvicorn (an import
string, so ``--workers`` processes import it too) and sets the limits with :func:`configure` in
each serving process. The same subclass serves over httptools or, without it, h11.
"""
from __future__ import annotations

import functools
import json

from zscrgan.errors import UserError, require

HEADER_TIMEOUT = 10.0  # seconds for a request's headers
MAX_CONNECTIONS = 500  # open connections a serving process keeps (half the common 1,024 open-files limit)
MAX_HEADER_BYTES = 64 * 1024  # a request line and headers (uvicorn's h11 default is 16 KiB; httptools has none)


class Limits:
    """The limits of this process's connections (:func:`configure`)."""

    header_timeout = HEADER_TIMEOUT
    max_connections = MAX_CONNECTIONS


def configure(header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
    Limits.header_timeout, Limits.max_connections = float(header_timeout), int(max_connections)


def json_reply(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection: {"detail": ...} as every error here."""
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"x-content-type-options: nosniff\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class _Guarded:
    """The limits above, mixed into uvicorn's protocol class (which provides the rest)."""

    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > Limits.max_connections:
            self._close_with(json_reply(503, "Service Unavailable",
                                        f"over {Limits.max_connections} open connections; try again shortly"))
            return
        self._await_headers()

    def _await_headers(self) -> None:
        """Start the clock for the next request's headers: done when uvicorn starts a new cycle."""
        self._waiting_on, self._header_bytes = self.cycle, 0
        self._header_timer = self.loop.call_later(Limits.header_timeout, self._headers_late)

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._close_with(json_reply(408, "Request Timeout",
                                    f"request headers not received within {Limits.header_timeout:g} s"))

    def _close_with(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is None:
            return
        if self.cycle is not self._waiting_on:  # uvicorn parsed the headers: a request is under way
            self._headers_arrived()
            return
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._headers_arrived()
            self._close_with(json_reply(431, "Request Header Fields Too Large",
                                        f"request headers over {MAX_HEADER_BYTES} bytes"))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # idle again (no pipelined request started): the next request's headers are on the clock
        if not self.transport.is_closing() and self.cycle.response_complete and self._header_timer is None:
            self._await_headers()

    def connection_lost(self, exc) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._close_with(json_reply(400, "Bad Request", msg))


def guarded(base: type) -> type:
    """``base`` (one of uvicorn's HTTP protocol classes) with :class:`_Guarded` mixed in."""
    return type(f"Guarded{base.__name__}", (_Guarded, base), {"__module__": __name__})


@functools.cache
def guarded_protocol() -> type:
    """uvicorn's protocol over httptools, as its "auto" picks (the serve extra installs httptools),
    else over h11, guarded."""
    try:
        base = require("uvicorn.protocols.http.httptools_impl", "serve", "zscrgan serve").HttpToolsProtocol
    except UserError:  # pragma: no cover - depends on the environment
        base = require("uvicorn.protocols.http.h11_impl", "serve", "zscrgan serve").H11Protocol
    return guarded(base)


def __getattr__(name: str):
    """``GuardedProtocol``, built at first use: this module imports without the serve extra."""
    if name == "GuardedProtocol":
        return guarded_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
