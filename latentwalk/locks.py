"""Exclusive locks on outputs and frame stores: fcntl.flock on a lock file holding the owner's pid.

flock locks die with their process, so a render killed with SIGKILL never leaves a stale lock;
the file itself is removed on release (and a waiter that locked a removed file tries again).
"""

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from latentwalk.errors import UserError


def holder(path: Path) -> str:
    """'pid N' from a lock file, for messages; 'another process' when unreadable."""
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextmanager
def file_lock(path: str | Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock named `path` for the block; busy: UserError naming the holder, or wait."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)
                raise UserError(f"{path}: {what} is in use by another latentwalk run ({holder(path)}); wait for it to finish or pass --wait") from None
            print(f"latentwalk: waiting for {holder(path)}, which holds {what}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The holder we waited for removed the file on release: lock the one now at `path`.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            os.unlink(path)  # while still locked, so nobody locks a file about to vanish
        except FileNotFoundError:
            pass
        os.close(fd)
