"""The local stack's port choice: listening ports never come from the kernel's ephemeral
range, where a released port can become an outgoing connection's before a server binds it."""

from __future__ import annotations

import socket

from infra import processes


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = processes._ephemeral_low()
    ports = [processes.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert processes.LISTEN_PORTS_FROM <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_handed_out(monkeypatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        candidates = iter([taken, *range(taken + 1, taken + 100)])
        monkeypatch.setattr(processes, "LISTEN_PORTS_FROM", 1024)
        monkeypatch.setattr(processes, "_ephemeral_low", lambda: 65535)
        monkeypatch.setattr(processes.random, "randrange", lambda a, b: next(candidates))
        assert processes.free_port() != taken
