"""One writer per output folder: the lock refuses a second holder naming the first's process, is released by the OS
when its holder is killed, and leaves no trace of a run that wrote nothing."""
import os
import signal
import subprocess
import sys

import pytest

from swaa.store.lock import LOCK_NAME, FolderInUse, FolderLock

HOLD = """
import sys, time
from swaa.store.lock import FolderLock
FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path):
    out = tmp_path / "a" / "b"
    first = FolderLock(out).acquire()
    assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with pytest.raises(FolderInUse, match=f"{out} is in use by process {os.getpid()}"):
        FolderLock(out).acquire()                  # another open file description: flock refuses it
    (out / "rows.jsonl").write_text("{}\n")
    first.release()
    assert sorted(p.name for p in out.iterdir()) == ["rows.jsonl"]     # the lock file goes, the results stay
    with FolderLock(out):
        pass


def test_folders_made_for_a_run_that_wrote_nothing_are_removed(tmp_path):
    with FolderLock(tmp_path / "a" / "b" / "c"):
        assert (tmp_path / "a" / "b" / "c" / LOCK_NAME).exists()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with FolderLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()            # a folder that was there before stays


def test_a_killed_holder_leaves_a_file_but_no_lock(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"in use by process {proc.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (tmp_path / LOCK_NAME).read_text() == f"{proc.pid}\n"      # stale: the kernel dropped the lock itself
    with FolderLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_lock_file_removed_by_its_holder_is_not_shared(tmp_path, monkeypatch):
    """A run that opens the lock file just before its holder removes it must not lock that removed file (two runs
    would then hold different files): it locks the file at the path."""
    import swaa.store.lock as outlock
    first = FolderLock(tmp_path).acquire()
    real_open = os.open

    def open_then_holder_leaves(*args, **kwargs):
        fd = real_open(*args, **kwargs)
        first.release()                                        # between this run's open and its flock
        return fd
    monkeypatch.setattr(outlock.os, "open", open_then_holder_leaves)
    second = FolderLock(tmp_path).acquire()
    monkeypatch.undo()
    try:
        assert os.fstat(second._fd).st_ino == os.stat(tmp_path / LOCK_NAME).st_ino
        with pytest.raises(FolderInUse):
            FolderLock(tmp_path).acquire()
    finally:
        second.release()
