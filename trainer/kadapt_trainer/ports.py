"""Free local TCP ports: one home for the launcher-less trainer and the local runner.

Pure standard library (no torch), so the operator side's local runner may import it.
"""

from __future__ import annotations

import socket

#: The loopback address local processes bind to and reach each other on.
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on :data:`LOCALHOST` that nobody listens on right now (the OS picks it).

    Another process may take it before the caller binds it; callers that start a server bind
    at once, and the ports of a local gang are picked in one process.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])
