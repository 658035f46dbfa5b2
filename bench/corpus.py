"""Generate a corpus of valid wheels and sdists: PROJECTS x FILES_PER_PROJECT files.

    python bench/corpus.py DIR --files 50000 [--per-project 10] [--layout flat|folders]

Half of each project's files are wheels, half sdists (Metadata 2.2), versions 1.0.0, 1.0.1, ...
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from builders import make_sdist, make_wheel


def build(directory: Path, files: int, per_project: int, layout: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    made = 0
    project = 0
    while made < files:
        name = f"proj{project:05d}"
        target = directory / name if layout == "folders" else directory
        for i in range(min(per_project, files - made)):
            version = f"1.0.{i // 2}"
            if i % 2 == 0:
                make_wheel(
                    target, name, version, summary=f"Project {project}", requires_python=">=3.8"
                )
            else:
                make_sdist(
                    target, name, version, metadata_version="2.2", summary=f"Project {project}"
                )
            made += 1
        project += 1
    # Old mtimes: the files look like a directory that has grown for years.
    old = time.time() - 86400
    for root, _dirs, names in os.walk(directory):
        for n in names:
            os.utime(os.path.join(root, n), (old, old))
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("directory", type=Path)
    p.add_argument("--files", type=int, default=50)
    p.add_argument("--per-project", type=int, default=10)
    p.add_argument("--layout", choices=("flat", "folders"), default="flat")
    a = p.parse_args()
    started = time.monotonic()
    n = build(a.directory, a.files, a.per_project, a.layout)
    print(f"{n} files in {a.directory} ({time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()
