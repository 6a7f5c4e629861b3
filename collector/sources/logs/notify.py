"""Linux inotify read by the event loop: file change notifications with no thread and no timer.

watchfiles' notifier (`RustNotify`) runs on a thread of its own that wakes every `step` ms, whether
anything changed or not, to check its stop event and to debounce: 10 wake-ups a second, each taking
the GIL, about 0.04 % of a core of an idle collector (0.21 % in all, measured by switching it off).
An inotify descriptor the loop reads only when it becomes readable costs nothing until a change, and
delivers the change at once. `_Watcher` (`source.py`) uses it for non-recursive watches on Linux;
recursive roots (`**`, where new subdirectories must be watched as they appear) and other systems
keep `RustNotify`.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from functools import cache
from typing import Any

__all__ = ["Inotify", "available"]

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_IGNORED, _IN_ONLYDIR = 0x400, 0x800, 0x8000, 0x01000000
#: What watchfiles' inotify backend watches for: writes, metadata, creation, deletion, renames in the
#: directory, and the directory itself going away.
_MASK = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
    | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR
)  # fmt: skip
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


@cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # dlopen(NULL): the process's own symbols, libc's among them; find_library("c") would run
        # `ldconfig -p` in a child process at every start.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):  # no libc by that name, or one without inotify (musl has it)
        return None
    return libc


def available() -> bool:
    """Whether this system has inotify (Linux with a libc that exposes it)."""
    return _libc() is not None


class Inotify:
    """One inotify descriptor watching some directories (not recursively).

    Raises:
        OSError: inotify unavailable, the instance or watch limit reached (`ENOSPC`, `EMFILE`), a
            directory missing or not listable.
    """

    def __init__(self, paths: list[str]) -> None:
        libc = _libc()
        if libc is None:
            raise OSError("inotify is not available")
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd
        self.watches: dict[int, str] = {}
        try:
            for path in paths:
                wd = libc.inotify_add_watch(fd, os.fsencode(path), _MASK)
                if wd < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), path)
                self.watches[wd] = path
        except BaseException:
            os.close(fd)
            raise

    def drain(self) -> bool:
        """Read every queued event (their content does not matter: any change wakes the source).

        Returns:
            False when a watched directory went away or was moved (its watch no longer covers the
            path): the caller watches again once a scan has seen the directories as they are now.
        """
        intact = True
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return intact
            if not data:
                return intact
            at = 0
            while at + _EVENT.size <= len(data):
                _wd, mask, _cookie, size = _EVENT.unpack_from(data, at)
                at += _EVENT.size + size
                if mask & (_IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF):
                    intact = False

    def close(self) -> None:
        os.close(self.fd)
