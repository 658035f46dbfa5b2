"""The corpora under test: generated once per size and layout (bench/corpus.py), cached, and
cleaned of what an earlier run left in them (uploads, temporary files, pkgserver's state).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from common import UPLOAD_NAME, log


@dataclass
class Corpus:
    files: int
    layout: str
    per_project: int
    path: Path
    seconds_to_build: float | None = None

    @property
    def projects(self) -> int:
        return -(-self.files // self.per_project)

    @property
    def full_projects(self) -> list[str]:
        """Projects that have all their per_project files."""
        return [f"proj{i:05d}" for i in range(self.files // self.per_project)]

    @property
    def latest_version(self) -> str:
        return f"1.0.{(self.per_project - 1) // 2}"

    def label(self) -> str:
        return f"{self.files:,} files ({self.projects:,} projects, {self.layout})"


def remove_leftovers(directory: Path) -> int:
    """Uploads of an earlier run and pkgserver temp files: the corpus is only what we made."""
    n = 0
    for root, dirs, names in os.walk(directory):
        for name in names:
            if name.startswith(UPLOAD_NAME) or name.startswith(".pkgserver-tmp-"):
                os.unlink(os.path.join(root, name))
                n += 1
        dirs[:] = [d for d in dirs if not d.startswith(UPLOAD_NAME)]
    return n


def count_dist_files(directory: Path) -> int:
    n = 0
    for _root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for f in names if not f.startswith(".") and f.endswith((".whl", ".tar.gz")))
    return n


def ensure_corpus(cache: Path, files: int, layout: str, per_project: int) -> Corpus:
    key = f"{layout}-{files}-{per_project}"
    path = cache / "corpus" / key
    marker = cache / "corpus" / f"{key}.json"
    corpus = Corpus(files, layout, per_project, path)
    if marker.exists() and path.is_dir():
        remove_leftovers(path)
        if count_dist_files(path) == files:
            log(f"corpus {key}: reusing {path}")
            return corpus
        log(f"corpus {key}: file count differs from {files}; building it again")
    shutil.rmtree(path, ignore_errors=True)
    marker.unlink(missing_ok=True)
    log(f"corpus {key}: generating {files:,} files in {path} ...")
    import corpus as corpus_mod

    t0 = time.monotonic()
    made = corpus_mod.build(path, files, per_project, layout)
    corpus.seconds_to_build = time.monotonic() - t0
    if made != files:
        raise SystemExit(f"corpus.py made {made} files, wanted {files}")
    marker.write_text(json.dumps({"files": files, "layout": layout, "per_project": per_project}))
    log(f"corpus {key}: {files:,} files in {corpus.seconds_to_build:.1f}s")
    return corpus


def state_files(corpus: Corpus) -> list[Path]:
    """pkgserver's dot-files in the corpus (a persistent cache there), not its temp files."""
    return [
        p
        for pattern in (".pkgserver*", "*/.pkgserver*")
        for p in corpus.path.glob(pattern)
        if not p.name.startswith(".pkgserver-tmp-")
    ]


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
