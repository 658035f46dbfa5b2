"""The waitress server pkgserver runs on, with one correction to waitress's HTTP/1.1 handling."""

from __future__ import annotations

import time
from typing import Any

from waitress import wasyncore as asyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import WSGITask


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


class _Channel(HTTPChannel):  # type: ignore[misc]
    task_class = _Task


def make_server(app: Any, **adjustments: Any) -> BaseWSGIServer | MultiSocketServer:
    """waitress's ``create_server``, with the channel above on every listening socket."""
    sockets: dict[int, Any] = {}
    server = create_server(app, map=sockets, **adjustments)
    for each in sockets.values():
        if isinstance(each, BaseWSGIServer):
            each.channel_class = _Channel
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
