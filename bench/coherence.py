"""Coherence between two replicas of one bucket: a writer uploads to replica A at a steady rate
(then in a burst, back to back), while a poller asks replica B for the project page over and
over; for each file, the time from A's answer to the upload to the first page of B that lists
it. The poller asks again as soon as an answer is in (after a pause of POLL seconds), so a
delay is measured to within about POLL plus one page request."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any

from common import HTML, UPLOAD_NAME, fetch, links, log
from s3_loads import latencies
from uploads import raw_upload

POLL = 0.02


class _Poller(threading.Thread):
    """Reads B's page of the upload project until stopped: when each wanted file first shows."""

    def __init__(self, base: str, wanted: set[str]) -> None:
        super().__init__(name="coherence-poller", daemon=True)
        self.base, self.wanted = base, wanted
        self.seen: dict[str, float] = {}
        self.polls = 0
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                a = fetch(self.base, f"/simple/{UPLOAD_NAME}/", {"Accept": HTML}, timeout=30)
            except (OSError, http.client.HTTPException):
                self.failures += 1
                time.sleep(0.1)
                continue
            now = time.monotonic()
            self.polls += 1
            if a.status == 200:
                for _href, text in links(a.body):
                    name = text.strip()
                    if name in self.wanted and name not in self.seen:
                        self.seen[name] = now
            time.sleep(POLL)


def _upload(
    writer: str, wheel: Path, version: str, timeout: float, answered: dict[str, float]
) -> str:
    """One upload to A; its answer's time goes to ``answered``. Returns what failed, or ""."""
    r = raw_upload(writer, wheel, version, timeout)
    if r["ok"]:
        answered[wheel.name] = time.monotonic()
        return ""
    return f"{wheel.name}: {r.get('status')} {r.get('detail')}"


def coherence(
    writer: str,
    reader: str,
    steady: list[tuple[Path, str]],
    burst: list[tuple[Path, str]],
    *,
    per_minute: float,
    wait: float,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``steady`` uploaded to ``writer`` at ``per_minute``, then ``burst`` back to back; waits
    up to ``wait`` seconds after the last upload for ``reader`` to list them all. For each
    phase: the delays' p50/p95/p99/max, and how many were never seen (or failed)."""
    answered: dict[str, float] = {}
    failed: list[str] = []
    poller = _Poller(reader, {w.name for w, _v in steady + burst})
    poller.start()
    t0 = time.monotonic()
    try:
        for n, (wheel, version) in enumerate(steady):
            time.sleep(max(0.0, t0 + n * 60.0 / per_minute - time.monotonic()))
            failed += filter(None, [_upload(writer, wheel, version, timeout, answered)])
        t_burst = time.monotonic()
        for wheel, version in burst:
            failed += filter(None, [_upload(writer, wheel, version, timeout, answered)])
        burst_seconds = time.monotonic() - t_burst
        last = time.monotonic()
        while time.monotonic() - last < wait and not set(answered) <= set(poller.seen):
            time.sleep(0.1)
    finally:
        poller.halt.set()
        poller.join(35)
    if failed:
        log(f"coherence: {len(failed)} uploads failed, e.g. {failed[0]}")

    def phase(wheels: list[tuple[Path, str]]) -> dict[str, Any]:
        names = [w.name for w, _v in wheels if w.name in answered]
        delays = [poller.seen[n] - answered[n] for n in names if n in poller.seen]
        return {
            "uploads": len(wheels),
            "answered": len(names),
            "seen": len(delays),
            "unseen": len(names) - len(delays),
            **latencies(delays),
        }

    return {
        "steady": {**phase(steady), "per_minute": per_minute},
        "burst": {**phase(burst), "seconds": burst_seconds},
        "polls": poller.polls,
        "poll_failures": poller.failures,
        "failed": failed[:3],
        "wait": wait,
    }
