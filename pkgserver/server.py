"""The waitress server pkgserver runs on: waitress, with a correction to its HTTP/1.1 handling
and defences against clients that hold connections without finishing a request.

Slow or idle connections (slowloris): waitress serves at most ``connection_limit`` connections
and stops accepting beyond it, so a client that opens hundreds of connections and sends half a
request on each took the server (``/health`` included) off the air. Here:
- a request's headers must arrive within ``header_timeout`` seconds of their first byte, and
  its body at MIN_BODY_RATE bytes a second at least (over twice that time);
- a connection idle for ``channel_timeout`` seconds is closed (waitress's own rule);
- once half the connection limit is in use, one address may hold at most
  ``connections_per_address`` connections: the next ones it opens are closed at once;
- the limit itself is 900 by default (select() stops at 1,024 descriptors; beyond, the CLI
  has waitress use poll(), slower here) and the open-files limit is raised to fit.
What is left (many addresses at once) is a reverse proxy's job: see SECURITY.md.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import resource
import time
from typing import Any

from waitress import wasyncore as asyncore
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import WSGITask

log = logging.getLogger("pkgserver")


class _FileBuffer(ReadOnlyFileBasedBuffer):  # type: ignore[misc]
    """waitress's wsgi.file_wrapper, for a file that may change while it is sent.

    The answer's Content-Length is the file's size when sending began. Two things can happen
    behind the server's back while a download runs:
    - the file is cut short (truncated in place): waitress's buffer kept offering bytes it no
      longer had, so the connection hung until the client gave up and the socket loop spun;
    - the file is rewritten in place with other bytes of the same size: they went out under
      the hash the index lists for the old ones.
    A short read, or (when the file carries ``expected_sha256``) a hash of the bytes sent that
    would not match once the last bytes were added, marks the buffer ``exhausted``: the last
    bytes are withheld and the channel ends the connection, so the client sees an incomplete
    body, never a complete one the index did not name. A file replaced by rename or removed
    is not affected: the open file keeps its old bytes."""

    exhausted = False

    def __init__(self, file: Any, block_size: int = 32768) -> None:
        super().__init__(file, block_size)
        self._expected: str | None = getattr(file, "expected_sha256", None)
        self._sha = hashlib.sha256() if self._expected else None
        self._peeked = b""

    def get(self, numbytes: int = -1, skip: bool = False) -> bytes:
        if self.exhausted:
            return b""
        want = self.remain if numbytes < 0 or numbytes > self.remain else numbytes
        data: bytes = super().get(numbytes, skip)
        if skip:
            return data
        if len(data) < want:  # shorter than when sending began
            self.exhausted = True
            return b""
        if self._sha is not None:
            if data and len(data) == self.remain:  # the last bytes go out only if all match
                whole = self._sha.copy()
                whole.update(data)
                if whole.hexdigest() != self._expected:
                    log.warning("a file changed while it was sent; the download was cut short")
                    self.exhausted = True
                    on_mismatch = getattr(self.file, "on_mismatch", None)
                    if on_mismatch is not None:
                        on_mismatch()
                    return b""
            self._peeked = data
        return data

    def __next__(self) -> bytes:
        # waitress iterates the file instead of handing it to the channel when prepare() finds
        # it empty: a file emptied after the app checked it. Send nothing then (waitress ends
        # the connection for the missing bytes) rather than bytes that were never hashed.
        if self._expected is not None:
            raise StopIteration
        data: bytes = super().__next__()
        return data

    next = __next__

    def skip(self, numbytes: int, allow_prune: int = 0) -> None:
        if self._sha is not None:
            self._sha.update(self._peeked[:numbytes])  # what the channel just sent
            self._peeked = self._peeked[numbytes:]
        super().skip(numbytes, allow_prune)


class _Task(WSGITask):  # type: ignore[misc]
    """Keeps an HTTP/1.1 connection open after a 304.

    waitress 3.0 closes the connection after any HTTP/1.1 answer without a Content-Length, which
    is right for a body of unknown length but also hits 304 Not Modified, which has no body by
    definition (RFC 9110 15.4.5). Revalidation is the most frequent request a CI fleet makes
    against an index (pip and uv send If-None-Match for every page they have cached), and a new
    TCP connection for each one halved their rate. Only the close that waitress adds for the
    missing length is skipped; a client's ``Connection: close``, HTTP/1.0 and errors still close.
    """

    _bodiless = False

    def build_response_header(self) -> bytes:
        self._bodiless = (
            self.version == "1.1"
            and self.status.startswith("304")
            and self.request.headers.get("CONNECTION", "").lower() != "close"
        )
        try:
            header: bytes = super().build_response_header()
        finally:
            self._bodiless = False
        return header

    def set_close_on_finish(self) -> None:
        if not self._bodiless:
            super().set_close_on_finish()

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ["wsgi.file_wrapper"] = _FileBuffer
        return environ


class _Channel(HTTPChannel):  # type: ignore[misc]
    task_class = _Task
    _counted: str | None = None  # the address this channel counts against
    _request_began = 0.0  # when the first bytes of the request being received arrived
    _bytes_in = 0  # bytes received on this connection
    _body_mark: tuple[float, int] | None = None  # (when, bytes_in) of the body rate's window

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        guard: _Guard | None = getattr(server, "pkgserver_guard", None)
        if guard is not None and isinstance(addr, tuple) and addr:
            self._counted = str(addr[0])
            if not guard.admit(self._counted, len(server._map)):
                self.will_close = True  # closed by the loop before anything is read

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self._request_began = time.time()
        self._bytes_in += len(data)
        done = bool(super().received(data))
        request = self.request
        if request is None:
            self._body_mark = None
        elif request.headers_finished and self._body_mark is None:
            self._body_mark = (time.time(), self._bytes_in)  # the body begins
        return done

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        guard: _Guard | None = getattr(self.server, "pkgserver_guard", None)
        if guard is not None and self._counted is not None:
            guard.release(self._counted)
            self._counted = None

    def _flush_some(self, do_close: bool = True) -> bool:
        sent: bool = super()._flush_some(do_close)
        if not sent and self.outbufs and getattr(self.outbufs[0], "exhausted", False):
            self.will_close = True  # the file ended early: end the answer (see _FileBuffer)
        return sent


class _Guard:
    """Connections per client address, and the cap on them once the server is busy."""

    def __init__(self, limit: int, per_address: int) -> None:
        self.busy_from = limit // 2
        self.per_address = per_address
        self.counts: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self._warned: dict[str, float] = {}

    def admit(self, address: str, open_connections: int) -> bool:
        self.counts[address] += 1
        if (
            not self.per_address
            or open_connections <= self.busy_from
            or self.counts[address] <= self.per_address
        ):
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._warned.get(address, -60.0) >= 60.0:
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warned[address] = now
            log.warning(
                "%s holds %d connections while the server is busy; closing its new ones "
                "(--connections-per-address %d)",
                address,
                self.counts[address] - 1,
                self.per_address,
            )
        return False

    def release(self, address: str) -> None:
        self.counts[address] -= 1
        if self.counts[address] <= 0:
            del self.counts[address]


# A request body must arrive at this rate at least (what Apache's mod_reqtimeout asks by
# default), measured over twice the header timeout (30 s by default): a body trickled a byte a
# minute held a connection for good, past the header timeout.
MIN_BODY_RATE = 500  # bytes per second


def _close_slow_requests(server: Any, header_timeout: float) -> None:
    """Run on waitress's maintenance: besides idle connections (waitress's channel_timeout),
    close those whose request headers have been arriving for longer than ``header_timeout``,
    and those whose body arrives slower than MIN_BODY_RATE."""
    original = server.maintenance

    def maintenance(now: float) -> None:
        original(now)
        cutoff = now - header_timeout
        window = 2 * header_timeout
        for channel in list(server.active_channels.values()):
            request = getattr(channel, "request", None)
            if request is None or channel.requests:
                continue
            if not request.headers_finished:
                if getattr(channel, "_request_began", now) < cutoff:
                    channel.will_close = True
                continue
            mark = getattr(channel, "_body_mark", None)
            if mark is None or now - mark[0] < window:
                continue
            arrived = channel._bytes_in - mark[1]
            if arrived < MIN_BODY_RATE * (now - mark[0]):
                channel.will_close = True
            else:
                channel._body_mark = (now, channel._bytes_in)

    server.maintenance = maintenance


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (as far as the hard limit allows);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def make_server(
    app: Any,
    *,
    connections_per_address: int = 0,
    header_timeout: float = 0.0,
    **adjustments: Any,
) -> BaseWSGIServer | MultiSocketServer:
    """waitress's ``create_server``, with the channel above on every listening socket, the
    per-address cap and the header timeout (0: off)."""
    sockets: dict[int, Any] = {}
    if header_timeout:
        # Maintenance (idle and slow connections) runs this often.
        timeouts = [header_timeout, adjustments.get("channel_timeout", 120)]
        adjustments.setdefault("cleanup_interval", max(1, min(10, int(min(timeouts) / 3))))
    server = create_server(app, map=sockets, **adjustments)
    # One guard for every listening socket (a host name may resolve to IPv4 and IPv6): the
    # counts are per client address, the limit is the map's.
    guard = _Guard(server.adj.connection_limit, connections_per_address)
    for each in sockets.values():
        if isinstance(each, BaseWSGIServer):
            each.channel_class = _Channel
            each.pkgserver_guard = guard
            if header_timeout:
                _close_slow_requests(each, header_timeout)
    server.pkgserver_sockets = sockets
    return server


def serve(server: Any) -> None:
    """Run the socket loop until Ctrl-C or SystemExit (what the SIGTERM handler raises).

    waitress's own ``run()`` catches those and then waits a fixed 5 s for requests in progress;
    this returns at once so that :func:`stop` applies the configured grace time instead.
    """
    try:
        server.asyncore.loop(
            timeout=server.adj.asyncore_loop_timeout,
            map=server.pkgserver_sockets,
            use_poll=server.adj.asyncore_use_poll,
        )
    except (KeyboardInterrupt, SystemExit):
        pass


def stop(server: Any, grace: float) -> bool:
    """Stop accepting connections, then keep the socket loop running for up to ``grace``
    seconds while requests in progress finish and their answers go out (an upload being written
    is published and its client told so); then close every socket. Returns whether everything
    finished in time: what did not dies with the process."""
    sockets = server.pkgserver_sockets
    for each in list(sockets.values()):
        if isinstance(each, BaseWSGIServer):
            # The listening socket only (its own close() would also close the trigger that
            # finishing requests pull): no new connections from here on.
            asyncore.dispatcher.close(each)
    dispatcher = server.task_dispatcher
    deadline = time.monotonic() + grace

    def busy() -> bool:
        with dispatcher.lock:
            if dispatcher.active_count > 0 or dispatcher.queue:
                return True
        return any(getattr(channel, "total_outbufs_len", 0) for channel in list(sockets.values()))

    while busy() and time.monotonic() < deadline:
        asyncore.loop(timeout=0.05, map=sockets, use_poll=server.adj.asyncore_use_poll, count=1)
    finished = not busy()
    dispatcher.shutdown(cancel_pending=True, timeout=1.0 if finished else 0.1)
    asyncore.close_all(sockets)
    return finished
