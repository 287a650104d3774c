"""Whether a server could listen on a port now, asked before a command starts one.

``freshrec demo`` and ``freshrec worker`` ask first so that a taken port fails
in one line naming the setting, not minutes later or in a Faust traceback. The
probe binds as the servers do (``SO_REUSEADDR``): connections in TIME_WAIT
from an earlier run (its clients' closed requests) do not stop them, and so do
not count here; a listening socket does.
"""

from __future__ import annotations

import socket


def bind_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound now (``"Address already in use"``), or None when it
    can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
