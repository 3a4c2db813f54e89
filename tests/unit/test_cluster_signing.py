"""Signed node-to-node requests (pure): what is accepted and every way one is refused."""

from __future__ import annotations

from ami_bridge.cluster import signing

SECRET = "k" * 43
BODY = b'{"tx": "a-1"}'
NOW = 1_700_000_000.0


def check(headers: dict[str, str], *, guard: signing.ReplayGuard | None = None,
          now: float = NOW, body: bytes = BODY, path: str = "/cluster/v1/commit",
          secret: str = SECRET) -> str | None:
    return signing.verify(secret, method="POST", path=path, body=body,
                          timestamp=headers.get(signing.TIME_HEADER),
                          signature=headers.get(signing.SIGNATURE_HEADER), now=now,
                          guard=guard or signing.ReplayGuard())


def signed(now: float = NOW, secret: str = SECRET, path: str = "/cluster/v1/commit"
           ) -> dict[str, str]:
    return signing.headers(secret, now=now, method="POST", path=path, body=BODY)


def test_a_signed_request_is_accepted() -> None:
    assert check(signed()) is None


def test_unsigned_is_refused() -> None:
    assert "unsigned request" in str(check({}))
    assert "unsigned request" in str(check({signing.TIME_HEADER: str(int(NOW))}))


def test_wrong_secret_is_refused() -> None:
    assert "signature does not match" in str(check(signed(secret="x" * 43)))


def test_any_change_of_body_path_or_time_breaks_the_signature() -> None:
    headers = signed()
    assert "does not match" in str(check(headers, body=BODY + b" "))
    assert "does not match" in str(check(headers, path="/cluster/v1/abort"))
    moved = headers | {signing.TIME_HEADER: str(int(NOW) + 1)}
    assert "does not match" in str(check(moved))


def test_a_replay_is_refused() -> None:
    guard = signing.ReplayGuard()
    headers = signed()
    assert check(headers, guard=guard) is None
    assert "replayed request" in str(check(headers, guard=guard, now=NOW + 5))


def test_an_old_or_future_request_is_refused() -> None:
    assert "31 s behind this node's clock" in str(check(signed(now=NOW - 31)))
    assert "31 s ahead of this node's clock" in str(check(signed(now=NOW + 31)))
    assert check(signed(now=NOW - 29)) is None


def test_malformed_time_and_non_ascii_signature_are_refused() -> None:
    headers = signed()
    assert "whole seconds" in str(check(headers | {signing.TIME_HEADER: "-5"}))
    assert "does not match" in str(check(headers | {signing.SIGNATURE_HEADER: "é" * 64}))


def test_the_guard_is_bounded_and_forgets_the_oldest_first() -> None:
    guard = signing.ReplayGuard(window=60.0, capacity=3)
    for i in range(3):
        guard.remember(f"s{i}", NOW + i)
    assert guard.seen("s0", NOW + 3) is False  # full: the oldest goes first
    assert guard.seen("s2", NOW + 3) is True
    assert guard.seen("s2", NOW + 70) is False  # out of the window
