"""Two small file operations shared by the htpasswd, hosted-names and CLI code."""

from __future__ import annotations

import os
import tempfile

__all__ = ["file_stamp", "write_atomically"]

Stamp = tuple[int, int, int]


def file_stamp(path: str) -> Stamp | None:
    """(inode, size, mtime in ns) of ``path``, or None if it cannot be stat'ed: a change of
    any of them means the file was edited or replaced, and is worth reading again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def write_atomically(path: str, content: bytes, mode: int, *, replace: bool = True) -> None:
    """Write ``path`` whole or not at all: a flushed temp file beside it, then renamed over it
    (``replace``) or linked to its name, which fails with FileExistsError rather than replace a
    file created meanwhile. The temp file never stays behind."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
            return
        os.link(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _unlink_quietly(tmp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
