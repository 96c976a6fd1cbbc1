"""Defences against slow clients: a deadline for request heads, an idle timeout for bodies, and a
cap on the connections one address may hold open with no request under way.

uvicorn has no header-read timeout: its keep-alive timer is cancelled by every byte that
arrives, so a client dribbling one byte at a time holds a connection for ever (uvicorn issue
#157 lists ``--timeout-request-start`` as never done). hypercorn has a ``read_timeout``, but it
is also reset by each read, so it does not stop dribbling either; both servers would need the
same patch. So ``serve`` keeps uvicorn and runs this small subclass of its h11 protocol (the
pure-Python one; httptools is not a dependency), which only adds timers around the parsing
uvicorn already does. The body timeout is in the ASGI app instead, where the upload's
spooled file can be removed and a 408 answered in the API's error shape.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import OrderedDict
from collections.abc import Iterable

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from cluster.http.errors import ApiError

EVICTION_GRACE_S = 1.0  # a connection this young is not yet suspect: it may be about to send its head
_TIMEOUT_BODY = json.dumps({"error": "request_timeout",
                            "message": "the request head did not arrive in time"}).encode()
_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                   b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                   % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class TrustedProxies:
    """Addresses and networks (``10.0.0.0/8``) whose ``X-Forwarded-For`` is believed; ``*``: any."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(e.strip() for e in entries if e.strip())
        self.any = "*" in self.entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in self.entries if e != "*"]

    def __contains__(self, host: object) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(str(host))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.entries)


def guarded_protocol(header_timeout: float, max_waiting: int,
                     trusted: TrustedProxies) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a request-head deadline and a per-address cap on waiting
    connections; pass the class as ``uvicorn.run(http=...)``.

    A connection is *waiting* while no request is under way on it: from accept, and again from
    the end of each answer, until the next request head is complete (an unread body after an
    early answer, e.g. a 401, counts as waiting too). A waiting connection must complete a head
    within ``header_timeout`` seconds, however it dribbles. No request has been authenticated on
    a waiting connection, so it is these that ``max_waiting`` caps per client address: when a
    new one would pass the cap, the oldest waiting connection of that address is closed (if it
    has waited ``EVICTION_GRACE_S`` at least: a burst of honest connections is not evicted
    before it could speak), so new clients are served and a flood only evicts itself. Trusted proxies are exempt (they multiplex
    many clients over their keep-alive connections and guard their own clients' reads).
    """
    if header_timeout <= 0 or max_waiting < 1:
        raise ValueError("a header timeout must be positive and the waiting cap at least 1")
    waiting: dict[str, OrderedDict[GuardedH11Protocol, None]] = {}

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _heard = False  # bytes of the awaited head have arrived
        _since = 0.0  # when it began to wait

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._heard = True
            super().data_received(data)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request head was parsed: the app has it now
                self._stop_waiting()

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._wait_for_head()  # before super(), which may parse a pipelined request
            super().on_response_complete()

        def _host(self) -> str:
            return self.client[0] if self.client else ""

        def _wait_for_head(self) -> None:
            self._stop_waiting()
            self._heard = False
            self._since = self.loop.time()
            self._deadline = self.loop.call_later(header_timeout, self._head_timed_out)
            host = self._host()
            if host in trusted:
                return
            peers = waiting.setdefault(host, OrderedDict())
            peers[self] = None
            while len(peers) > max_waiting:
                oldest = next(iter(peers))
                if self._since - oldest._since < EVICTION_GRACE_S:
                    break
                oldest._stop_waiting()
                oldest.transport.close()

        def _stop_waiting(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            host = self._host()
            peers = waiting.get(host)
            if peers and self in peers:
                del peers[self]
                if not peers:
                    del waiting[host]

        def _head_timed_out(self) -> None:
            self._deadline = None
            self._stop_waiting()
            if self.transport.is_closing():
                return
            if self._heard and self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
                self.transport.write(_TIMEOUT_ANSWER)  # a partial head: say why, then hang up
            self.transport.close()

    return GuardedH11Protocol


class BodyIdleTimeout:
    """ASGI middleware: a request body that sends nothing for ``seconds`` ends with 408.

    The wait for each chunk of the body is bounded; on expiry ``receive`` raises an
    ``ApiError(408)`` inside the route, so whatever the route was writing (a spooled upload)
    is cleaned up on the way out, and the answer closes the connection. Once the body is
    complete ``receive`` is left unbounded: Starlette waits on it for the client's disconnect
    while it streams a download.
    """

    def __init__(self, app, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        body_done = False

        async def bounded_receive():
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                with anyio.fail_after(self.seconds):
                    message = await receive()
            except TimeoutError:
                raise ApiError(408, "request_timeout",
                               f"the request body sent nothing for {self.seconds:g} s",
                               {"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)
