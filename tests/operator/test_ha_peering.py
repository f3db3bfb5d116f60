"""kopf's peering rule as kadapt's periodic task applies it (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kadapt_operator.runtime.peering import active_everywhere, is_active, own_identity

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 5, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


def test_the_highest_live_priority_works_and_the_others_pause() -> None:
    status = {"a": peer(100), "b": peer(200)}
    assert is_active(status, identity="b", priority=200, now=NOW)
    assert not is_active(status, identity="a", priority=100, now=NOW)


def test_a_dead_peer_does_not_pause_and_equal_priorities_pause_both() -> None:
    assert is_active({"a": peer(100), "b": peer(200, seen_ago=61)}, identity="a", priority=100, now=NOW)
    same = {"a": peer(100), "b": peer(100)}
    assert not is_active(same, identity="a", priority=100, now=NOW)
    assert not is_active(same, identity="b", priority=100, now=NOW)
    assert is_active({"a": peer(100)}, identity="a", priority=100, now=NOW), "alone: active"
    assert is_active({}, identity="a", priority=0, now=NOW)


def test_paused_in_any_served_namespace_is_paused() -> None:
    ns_a = {"status": {"a": peer(100)}}
    ns_b = {"status": {"a": peer(100), "b": peer(300)}}
    assert not active_everywhere([ns_a, ns_b], identity="a", priority=100, now=NOW)
    assert active_everywhere([ns_a, None], identity="a", priority=100, now=NOW)


def test_identity_is_the_pod_name_in_a_pod() -> None:
    assert own_identity({"POD_ID": "kadapt-7d9f-abcde"}) == "kadapt-7d9f-abcde"
    assert own_identity({}) != own_identity({})
