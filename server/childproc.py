"""What every worker process the server spawns does first: end when the server ends.

Decoding, training and inference run in spawned child processes (their own interpreter lock,
nice 10, and a crash there is not the server's). A server killed with SIGKILL cannot tell them
to stop, and a child waiting for its next call would wait forever, holding its models and
memory, one more after every crash. So each child watches its parent: once the parent is gone
(the child is re-parented), it exits at once. A thread polling ``getppid`` is used rather than
``PR_SET_PDEATHSIG``, which fires when the *thread* that started the child exits, and an
executor's threads come and go.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["PARENT_POLL_S", "exit_with_parent"]

PARENT_POLL_S = 0.5


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """Start the watch in this (child) process; returns at once."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(0)  # nothing of the child's is worth finishing: its server is gone

    threading.Thread(target=watch, name="tympan-parent-watch", daemon=True).start()
