"""sd_notify over a real AF_UNIX datagram socket, as systemd receives it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ami_bridge import sdnotify


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    assert datagram.endswith(b"\n")
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_ready_and_status_arrive_as_one_datagram(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    notifier = sdnotify.Notifier(path)
    assert notifier.ready("routing: 2 VTS connected")
    assert fields(sock.recv(4096)) == {"READY": "1", "STATUS": "routing: 2 VTS connected"}
    assert notifier.stopping("draining 3 calls")
    assert fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "draining 3 calls"}


def test_reloading_carries_a_monotonic_timestamp(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    sdnotify.Notifier(path).reloading("reloading")
    got = fields(sock.recv(4096))
    assert got["RELOADING"] == "1" and int(got["MONOTONIC_USEC"]) > 0


def test_a_newline_in_a_status_cannot_start_a_second_assignment(
        manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    sdnotify.Notifier(path).status("vts acme\nREADY=1")
    assert fields(sock.recv(4096)) == {"STATUS": "vts acme READY=1"}


def test_abstract_socket_address(tmp_path: Path) -> None:
    name = f"ami-bridge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        assert sdnotify.Notifier("@" + name).notify(STATUS="x")
        assert sock.recv(4096) == b"STATUS=x\n"


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sdnotify.NOTIFY_SOCKET_ENV, raising=False)
    notifier = sdnotify.Notifier()
    assert not notifier.enabled
    assert notifier.ready("x") is False


def test_env_variable_names_the_socket(manager: tuple[str, socket.socket],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path, sock = manager
    monkeypatch.setenv(sdnotify.NOTIFY_SOCKET_ENV, path)
    assert sdnotify.Notifier().ready("up")
    assert fields(sock.recv(4096))["READY"] == "1"


def test_a_dead_manager_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = sdnotify.Notifier(str(tmp_path / "nobody"))
    assert notifier.ready("x") is False
    assert notifier.status("y") is False
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_bad_key_is_refused() -> None:
    with pytest.raises(ValueError, match="upper-case"):
        sdnotify.encode({"ready": "1"})
