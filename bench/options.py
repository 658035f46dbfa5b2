"""bench/run.py's command line: its options, their defaults, and the defaults --quick changes."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import ENDPOINTS, HERE, ROOT


def _corpus_and_load(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--files",
        default=None,
        help="comma-separated corpus sizes (default 50,5000,50000; --quick: 50)",
    )
    p.add_argument(
        "--layout", default="flat", help="flat, folders or both comma-separated (default flat)"
    )
    p.add_argument("--per-project", type=int, default=10)
    p.add_argument(
        "--duration", type=float, default=None, help="seconds per endpoint (default 10; --quick: 2)"
    )
    p.add_argument(
        "--warmup", type=float, default=1, help="seconds of unmeasured load before each endpoint"
    )
    p.add_argument("--connections", type=int, default=50)
    p.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (default 1: leaves the other CPU to the server)",
    )
    p.add_argument("--timeout", type=float, default=60, help="load client timeout, seconds")
    p.add_argument(
        "--threads", type=int, default=16, help="waitress threads for pkgserver and the ceiling"
    )
    p.add_argument("--servers", default="pkgserver,pypiserver,pypiserver-cached,ceiling")
    p.add_argument("--endpoints", default=",".join(k for k, _ in ENDPOINTS))
    p.add_argument("--sample", type=int, default=1000, help="projects the load draws from")
    p.add_argument("--e2e-projects", type=int, default=20)
    p.add_argument("--upload-mb", type=int, default=100)
    p.add_argument("--no-e2e", action="store_true", help="skip pip and uv")
    p.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even if wrk is there",
    )
    p.add_argument("--quick", action="store_true", help="sanity run: 50 files, 2 s per endpoint")


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache", type=Path, default=HERE / ".cache", help="corpus cache (default bench/.cache)"
    )
    p.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    p.add_argument("--ready-timeout", type=float, default=900)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=180,
        help="how long a server may take to work off a backlog before it counts as stuck",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="before each measurement, wait up to this many seconds for other work on the"
        " machine to stop (default 30, --quick 5; 0 = do not wait)",
    )
    p.add_argument(
        "--client-timeout", type=float, default=900, help="pip, uv, twine and upload timeout"
    )
    p.add_argument("--pkgserver-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument(
        "--lock-wait",
        type=float,
        default=3600,
        help="seconds to wait for another run on the same --cache to finish (default 3600)",
    )


def _sources(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sources",
        metavar="REV",
        help="measure pkgserver as of this git revision (e.g. HEAD) instead of the working tree",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure pkgserver as of this git revision, as the server pkgserver@REV right"
        " after pkgserver, and report pkgserver's figures relative to it (before/after in one run)",
    )
    p.add_argument(
        "--live-sources",
        action="store_true",
        help="run pkgserver from the working tree instead of a snapshot taken at the start",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: write the Markdown report of an earlier run's JSON to --out",
    )


def parse_args(
    argv: list[str] | None, description: str | None
) -> tuple[argparse.Namespace, list[int], list[str]]:
    """The options, with the defaults that depend on --quick filled in; the corpus sizes and
    layouts to measure."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _corpus_and_load(p)
    _run(p)
    _sources(p)
    args = p.parse_args(argv)
    if args.files is None:
        args.files = "50" if args.quick else "50,5000,50000"
    if args.duration is None:
        args.duration = 2 if args.quick else 10
    if args.wait_quiet is None:
        args.wait_quiet = 5 if args.quick else 30
    sizes = [int(x.replace("_", "")) for x in args.files.split(",") if x.strip()]
    layouts = [x.strip() for x in args.layout.split(",") if x.strip()]
    if any(lay not in ("flat", "folders") for lay in layouts):
        p.error("--layout: flat, folders")
    args.endpoint_keys = [x.strip() for x in args.endpoints.split(",") if x.strip()]
    return args, sizes, layouts
