"""One writer per output folder: an OS file lock held for a whole run, released by the OS on exit or crash.

    with FolderLock("out/eval"):        # ValueError "out/eval is in use by process 4242; ..." if another run holds it
        ...                             # write results

The lock is ``fcntl.flock`` on ``OUT/.swaa.lock``, which holds the holder's process id for the message. A killed run
leaves the file but not the lock (the kernel drops it with the process), so the next run proceeds. On release the
file is removed, and so are the folders the lock created if the run left them empty: a run refused after taking the
lock leaves nothing behind. Removing a lock file is safe because a new holder checks that the file it locked is the
one at the path (a run that opened the old file just before its removal tries again on the new one).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["FolderLock", "FolderInUse", "LOCK_NAME"]

LOCK_NAME = ".swaa.lock"


class FolderInUse(ValueError):
    pass


class FolderLock:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> "FolderLock":
        missing = []
        for p in [self.folder, *self.folder.absolute().parents]:
            if p.exists():
                break
            missing.append(p)
        self._made = missing                          # innermost first: the order to remove them in
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = self._lock()
        except BaseException:
            self._remove_made()
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        return self

    def _lock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise FolderInUse(f"{self.folder} is in use by process {pid or '(starting)'}: one run writes to a "
                                  "folder at a time; wait for it to finish or write to another folder") from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:        # the file at the path is the one locked
                return fd
            os.close(fd)                              # its holder removed it meanwhile: lock the new one

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)         # still holding the lock: nobody else uses this file
        finally:
            os.close(self._fd)
            self._fd = None
            self._remove_made()

    def _remove_made(self) -> None:
        for p in self._made:
            try:
                p.rmdir()                             # only an empty folder goes
            except OSError:
                break
        self._made = []

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
