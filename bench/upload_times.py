"""What recording upload times costs a start: the time from `pkgserver run` to its serving line,
and its RSS then, for a corpus directory, with and without the index cache and the record.

    python bench/upload_times.py CORPUS --baseline SRC [--rounds 3]

``SRC`` is a folder holding another ``pkgserver`` package (``git archive REV pkgserver | tar -x
-C SRC``), run the same way, for comparison. The corpus's ``.pkgserver`` folder is removed
before each first start (it holds the record being measured), so run it on a copy (``cp -al``
of a corpus is enough: nothing is written to the distribution files).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVING = re.compile(rb"serving .* on http://127\.0\.0\.1:(\d+)/")


def start(src: Path, corpus: Path, cache: Path, *extra: str) -> tuple[float, int, str]:
    """(seconds to the serving line, RSS in KiB then, the 'indexed ...' log line)."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("PKGSERVER_")}
    cmd = [sys.executable, "-m", "pkgserver", "run", "-p", "0", "-i", "127.0.0.1", "-P", "."]
    cmd += ["-a", ".", "--disable-fallback", "--cache-dir", str(cache), *extra, str(corpus)]
    started = time.monotonic()
    # From the source folder: ``-m`` puts the working directory first on the path.
    proc = subprocess.Popen(cmd, env=env, cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    indexed = ""
    try:
        for line in proc.stdout:
            if b"indexed" in line:
                indexed = line.decode().strip().split(": ", 1)[-1]
            if SERVING.search(line):
                took = time.monotonic() - started
                status = Path(f"/proc/{proc.pid}/status").read_text()
                rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                # The process's own CPU seconds (user + system), less shaken than the wall
                # time by whatever else runs on the machine; worker processes not included.
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                return took, rss, f"{indexed}; CPU {cpu:.2f} s"
        raise RuntimeError(f"no serving line from {cmd}")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    state = args.corpus / ".pkgserver"
    record = state / "upload-times.jsonl"
    cases: dict[str, list[tuple[float, int]]] = {}
    work = Path(tempfile.mkdtemp(prefix="pkgserver-bench-times-"))
    try:
        for n in range(args.rounds):
            for name, src in (("baseline", args.baseline), ("upload times", here)):
                cache = work / f"cache-{name.replace(' ', '-')}-{n}"
                shutil.rmtree(state, ignore_errors=True)
                runs = [
                    ("first start", cache, ()),
                    ("restart (index cache)", cache, ()),
                    ("restart without the index cache", work / f"empty-{name[0]}-{n}", ()),
                ]
                for label, cache_dir, extra in runs:
                    took, rss, indexed = start(src, args.corpus, cache_dir, *extra)
                    cases.setdefault(f"{name}: {label}", []).append((took, rss))
                    print(
                        f"round {n + 1} {name}: {label}: {took:.2f} s, {rss // 1024} MiB; "
                        f"{indexed}",
                        flush=True,
                    )
                if record.exists():
                    size = record.stat().st_size
                    lines = record.read_bytes().count(b"\n")
                    print(f"  record: {lines} lines, {size / 1024 / 1024:.1f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| case | median seconds to serving | median RSS MiB | runs |\n|---|---:|---:|---|")
    for label, results in cases.items():
        secs = statistics.median(r[0] for r in results)
        rss = statistics.median(r[1] for r in results) / 1024
        shown = ", ".join(f"{r[0]:.2f}" for r in results)
        print(f"| {label} | {secs:.2f} | {rss:.0f} | {shown} |")


if __name__ == "__main__":
    main()
