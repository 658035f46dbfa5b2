"""CPU and memory, of a server process and of the machine, from /proc.

A shared machine makes every figure low: these say how much CPU the server used and how much
anything else did meanwhile, so that the report shows it rather than hides it.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from common import log


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB, from /proc."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime + stime, and cutime + cstime: worker processes it has reaped (an indexing pool)
    used = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return used / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all CPUs of the machine have been busy (from /proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and its finished children (the load generator)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _all_cpu() -> dict[int, tuple[float, str]]:
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(d.name)] = (
            (int(fields[11]) + int(fields[12])) / tick,
            stat[: stat.rindex(")") + 1],
        )
    return out


def busiest(seconds: float = 1.0, exclude: tuple[int, ...] = ()) -> str:
    """The processes that used the most CPU over ``seconds``, for the log."""
    before = _all_cpu()
    time.sleep(seconds)
    after = _all_cpu()
    used = []
    for pid, (cpu, name) in after.items():
        if pid in exclude or pid == os.getpid() or pid not in before:
            continue
        delta = (cpu - before[pid][0]) / seconds
        if delta > 0.05:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:90]
            except OSError:
                cmd = name
            used.append((delta, f"{pid} {cmd.strip() or name} ({delta:.2f})"))
    return "; ".join(t for _d, t in sorted(used, reverse=True)[:3]) or "no single process"


def others_cpu(pid: int | None, seconds: float) -> float:
    """CPUs used over ``seconds`` by anything but this process and the server ``pid``."""
    busy0, own0 = machine_busy(), own_cpu()
    srv0 = cpu_seconds(pid) if pid else 0.0
    time.sleep(seconds)
    srv1 = cpu_seconds(pid) if pid else 0.0
    srv = (srv1 - srv0) if srv0 is not None and srv1 is not None else 0.0
    return max(0.0, (machine_busy() - busy0 - (own_cpu() - own0) - srv) / seconds)


def wait_quiet(pid: int | None, max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until other work on the machine uses under ``threshold`` CPUs;
    returns what it last measured. A shared machine is reported, not hidden."""
    deadline = time.monotonic() + max_wait
    other = others_cpu(pid, 0.5)
    warned = False
    while other > threshold and time.monotonic() < deadline:
        if not warned:
            log(
                f"other work on the machine uses {other:.2f} CPUs: waiting up to {max_wait:.0f}s"
                f" (busiest: {busiest(0.5, (pid,) if pid else ())})"
            )
            warned = True
        other = others_cpu(pid, 1.0)
    return other


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
