"""Keeping the client's secrets out of core dumps.

A core dump holds the whole memory of the process: the room secret, the
static private key and every session key.  It lands in the working
directory, in ``systemd-coredump``'s store, or in a crash reporter's upload,
all of them places a secret must not go.  So the client forbids dumps for
itself before it reads a link or a key:

* ``RLIMIT_CORE`` 0, soft and hard (the hard limit so that nothing later
  in the process can raise it again);
* ``prctl(PR_SET_DUMPABLE, 0)`` on Linux, which also covers the kernel's
  pipe to a core handler (``core_pattern = |...``, which ignores
  ``RLIMIT_CORE``) and keeps other processes of the same user from
  attaching a debugger or reading ``/proc/<pid>/mem``.

Both are best effort: a platform without them is not an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
from typing import Final

__all__ = ["PR_GET_DUMPABLE", "PR_SET_DUMPABLE", "keep_secrets_out_of_core_dumps"]

PR_SET_DUMPABLE: Final = 4
PR_GET_DUMPABLE: Final = 3


def keep_secrets_out_of_core_dumps() -> list[str]:
    """Forbid core dumps of this process; returns what was applied (for tests and --debug)."""
    applied: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        applied.append("RLIMIT_CORE=0")
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
                applied.append("PR_SET_DUMPABLE=0")
    return applied
