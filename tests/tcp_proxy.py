"""A TCP proxy a test controls: forwards bytes both ways until told to black-hole them.

A black hole, as a network partition makes one: connections stay open, nothing
is refused, and no byte gets through in either direction (nor does a new
connection's first byte). Bytes sent meanwhile wait in the kernel's buffers and
arrive once the hole heals, as TCP's retransmissions deliver them after a
partition. A Kafka broker is put behind it by advertising the proxy's address
(:class:`freshrec.stack.BrokerProcess`'s ``advertised``), so that every client,
after its first metadata request, talks to the broker through it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from freshrec.stack import free_port

_CHUNK = 65536


class TcpProxy:
    """``127.0.0.1:port`` forwarding to ``upstream``; :meth:`black_hole` and :meth:`heal`."""

    def __init__(self, upstream: tuple[str, int], port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def black_hole(self) -> None:
        """From now on no byte gets through, in either direction."""
        self._open.clear()

    def heal(self) -> None:
        """Bytes flow again, those held back first."""
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self._open.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()
        try:
            server = socket.create_connection(self.upstream, 5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self._sockets += [client, server]
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._open.wait()  # a hole: read nothing, so the sender's bytes wait
                data = src.recv(_CHUNK)
                if not data:
                    break
                self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
