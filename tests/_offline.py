"""What "fails at once" means without a stopwatch: no connection attempted beyond the one reachability
probe, and no retry wait. Unit tests assert these counts; ``ximgctx.bench.refusals`` measures the time."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NetworkWatch:
    """Every TCP connection attempted and every ``time.sleep`` requested while it was installed."""

    connects: list[Any] = field(default_factory=list)  # the addresses, in order
    sleeps: list[float] = field(default_factory=list)  # the seconds asked for, in order


def watch_network(monkeypatch) -> NetworkWatch:
    """Refuse (with ``OSError``, as an unplugged machine does) and record every connection attempted through
    ``socket.create_connection`` or an IP socket's ``connect``; record every ``time.sleep`` (still slept)."""
    watch = NetworkWatch()
    real_sleep = time.sleep

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        watch.connects.append(address)
        raise OSError(f"network is unreachable (test): {address}")

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family not in (socket.AF_INET, socket.AF_INET6):  # a local socket is not the network
            return real_connect(self, address)
        watch.connects.append(address)
        raise OSError(f"network is unreachable (test): {address}")

    def sleep(seconds: float) -> None:
        watch.sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(time, "sleep", sleep)
    return watch
