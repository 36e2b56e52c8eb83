"""Stopping a long command with SIGTERM (``kill``, a container or a service manager
stopping it) the way Ctrl-C stops it."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM raises KeyboardInterrupt, as Ctrl-C does.

    Python's default for SIGTERM ends the process at once, past every ``finally``: a
    simulation left its throwaway databases, temporary folder and child processes behind,
    an import its half-written error report. Ctrl-C ran that clean-up already. Outside the
    main thread (where no handler can be set) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
