"""Writing files safely: exclusive locks, and atomic writes that never follow a link.

Locks are fcntl.flock on a lock file holding the owner's pid. flock locks die with their
process, so a render killed with SIGKILL never leaves a stale lock; the file itself is removed
on release (and a waiter that locked a removed file tries again).

Nothing latentwalk writes follows a link it did not create. Every file (frames, PNGs,
manifests, markers, plots) is written to a new temp file beside its target, opened with
O_CREAT | O_EXCL | O_NOFOLLOW (always a new inode: never an existing file, never a link's
target), flushed to disk, and renamed over the target once the target is checked to be no
symbolic link. A rename replaces a name; it never writes into the file a symlink or a hard link
names. Lock files are opened with O_NOFOLLOW and must be plain files with one name. A link where
latentwalk would write is refused with a UserError naming it. New files get the mode any
program's files get, 0666 & ~umask (tempfile.mkstemp would make them 0600).
"""

import errno
import fcntl
import os
import re
import secrets
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from latentwalk.errors import UserError

_PID = re.compile(rb"^\d*\n?$")  # what a lock file holds: a pid, or nothing yet


def link_message(path: str | Path, flag: str = "--out") -> str:
    return f"{path}: is a symbolic link; latentwalk does not write through links: remove it or choose another {flag}"


def refuse_link(path: str | Path, flag: str = "--out") -> None:
    """UserError if `path` is a symbolic link (dangling or not); a missing path is fine."""
    if os.path.islink(path):
        raise UserError(link_message(path, flag))


def create_temp(path: str | Path, suffix: str = ".tmp", prefix: str | None = None) -> tuple[int, Path]:
    """(fd, path) of a new, empty file beside `path`, named `<prefix><random><suffix>`, open for writing.

    O_CREAT | O_EXCL | O_NOFOLLOW: the file is new (a link or a file already at the name is an
    error, and another name is tried); its mode is 0666 & ~umask, like any new file's.
    """
    path = Path(path)
    prefix = f".{path.name}." if prefix is None else prefix
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temp = path.parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(path.parent))


def move_into_place(temp: str | Path, path: str | Path, flag: str = "--out") -> None:
    """Rename a finished temp file over `path`, which must not be a symbolic link."""
    refuse_link(path, flag)
    os.replace(temp, path)


@contextmanager
def open_output(path: str | Path, flag: str = "--out", *, suffix: str = ".tmp", prefix: str | None = None, sync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new contents into; they replace `path` when the block ends.

    The contents go to a new temp file beside `path` (see `create_temp`), are flushed (and
    fsynced when `sync`), then renamed over `path` after checking it is no symbolic link. If the
    block raises, or `path` is a link, the temp file is removed and `path` stays as it was.
    """
    path = Path(path)
    refuse_link(path, flag)  # before any work
    fd, temp = create_temp(path, suffix, prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        move_into_place(temp, path, flag)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes, flag: str = "--out", *, suffix: str = ".tmp", prefix: str | None = None, sync: bool = True) -> Path:
    """Replace `path` with `data` atomically, never through a link (see `open_output`)."""
    with open_output(path, flag, suffix=suffix, prefix=prefix, sync=sync) as f:
        f.write(data)
    return Path(path)


def open_lock_file(path: Path, flag: str) -> int:
    """An fd of the lock file at `path`, created if missing; refuses a link or a file that is no lock file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(link_message(path, flag)) from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a plain file"
    elif info.st_nlink != 1:
        problem = f"has {info.st_nlink} names (a hard link to another file)"
    if problem:
        os.close(fd)
        raise UserError(f"{path}: {problem}; latentwalk does not write through links: remove it or choose another {flag}")
    return fd


def holder(path: Path, fd: int | None = None) -> str:
    """'pid N' from a lock file (read through `fd` when given), for messages; 'another process' when unreadable."""
    try:
        pid = (os.pread(fd, 32, 0) if fd is not None else path.read_bytes()[:32]).decode(errors="replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextmanager
def file_lock(path: str | Path, what: str, wait: bool = False, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock named `path` for the block; busy: UserError naming the holder, or wait.

    `flag` is the option to name when the lock file is a link (or not a lock file): --out, --store.
    """
    path = Path(path)
    while True:
        fd = open_lock_file(path, flag)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                who = holder(path, fd)
                os.close(fd)
                raise UserError(f"{path}: {what} is in use by another latentwalk run ({who}); wait for it to finish or pass --wait") from None
            print(f"latentwalk: waiting for {holder(path, fd)}, which holds {what}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The holder we waited for removed the file on release: lock the one now at `path`.
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if not _PID.match(os.pread(fd, 64, 0)):  # a file of someone else's under the lock's name: leave it
        os.close(fd)
        raise UserError(f"{path}: exists and is not a latentwalk lock file; move it away or choose another {flag}")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)  # while still locked, so nobody locks a file about to vanish
        except FileNotFoundError:
            pass
        os.close(fd)
