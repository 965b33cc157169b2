"""A child process that dies with its supervisor, even when the supervisor is SIGKILLed.

Two mechanisms, both set up by the child itself (``bind_to_parent``):

- Linux ``PR_SET_PDEATHSIG``: the kernel sends the child SIGTERM when the *thread* that
  forked it exits, so supervisors fork from their main thread (``shoal up``'s event loop,
  the balancer master's loop). It is set after exec, so the child then checks that its
  parent is still the expected pid: a supervisor that died in between is caught too.
- A lifeline pipe: the supervisor holds the write end of the child's stdin; the child
  watches for EOF (which the kernel delivers when the supervisor dies, however it dies, on
  any POSIX system). On EOF the child sends itself SIGTERM (its usual clean stop) and, if it
  is still alive after ``grace`` seconds, exits hard.

``python -m core.lifeline PPID MODULE [ARGS...]`` binds to ``PPID`` and then runs
``python -m MODULE ARGS...`` in the same process (what ``shoal up`` starts each service
with).
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
DEFAULT_GRACE = 20.0


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel for ``signum`` when the parent thread dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_pipe(fd: int, grace: float = DEFAULT_GRACE) -> None:
    """Start a daemon thread that reads ``fd`` until EOF, then stops this process."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 4096):
                pass
        with contextlib.suppress(ProcessLookupError):
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def bind_to_parent(
    expected_parent: int, *, pipe_fd: int | None = 0, grace: float = DEFAULT_GRACE
) -> None:
    """Die with ``expected_parent``: death signal, parent check, and the lifeline pipe."""
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != expected_parent:
        # the supervisor died before the death signal was armed
        os._exit(1)
    if pipe_fd is not None:
        watch_pipe(pipe_fd, grace=grace)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m core.lifeline PARENT_PID MODULE [ARGS...]")
    bind_to_parent(int(argv[0]))
    module, args = argv[1], argv[2:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
