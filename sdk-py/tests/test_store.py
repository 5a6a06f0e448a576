"""The key-value store in plain CPython: the double a handler's unit tests
run against, with the host's semantics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from optech_sdk import Request, StoreError, store, testing


@pytest.fixture(autouse=True)
def empty_store() -> Iterator[None]:
    testing.store.reset()
    yield
    testing.store.reset()


def test_get_set_exists_delete_text_and_bytes() -> None:
    b = store.open("things")
    assert b.name == "things"
    assert b.get("k") is None
    assert b.get_bytes("k") is None
    assert not b.exists("k")
    b.set("k", "héllo ✓")
    assert b.get("k") == "héllo ✓"
    assert b.get_bytes("k") == "héllo ✓".encode()
    assert b.exists("k")
    b.set_bytes("raw", b"\x00\xff\x01")
    assert b.get_bytes("raw") == b"\x00\xff\x01"
    with pytest.raises(ValueError, match="not UTF-8 text: read it with get_bytes"):
        b.get("raw")
    b.delete("k")
    b.delete("never-there")
    assert b.get("k") is None
    assert not b.exists("k")
    with pytest.raises(TypeError):
        b.set("k", b"bytes")  # type: ignore[arg-type]


def test_the_store_outlives_a_call_and_buckets_are_separate() -> None:
    def handle(req: Request) -> dict[str, object]:
        return {"seen": store.open("counters").increment(f"seen:{req.inputs.require('user')}")}

    assert testing.call(handle, {"user": "ada"}) == {"seen": "1"}
    assert testing.call(handle, {"user": "ada"}) == {"seen": "2"}
    assert testing.call(handle, {"user": "bob"}) == {"seen": "1"}
    assert store.open("counters").get("seen:ada") == "2"
    assert store.open("other").get("seen:ada") is None


def test_increment_counts_from_zero_in_decimal_text() -> None:
    b = store.open("counters")
    assert b.increment("n") == 1
    assert b.increment("n", 4) == 5
    assert b.get("n") == "5"
    assert b.increment("n", -7) == -2
    assert b.get("n") == "-2"
    b.set("m", "41")
    assert b.increment("m") == 42
    b.set("text", "many")
    with pytest.raises(StoreError, match="^key `text` does not hold a decimal integer") as info:
        b.increment("text")
    assert info.value.kind == "other"
    with pytest.raises(TypeError):
        b.increment("n", 1.5)  # type: ignore[arg-type]
    b.set("big", str(2**63 - 1))
    with pytest.raises(StoreError, match="overflows a 64-bit integer"):
        b.increment("big")


def test_ttl_expires_increment_keeps_it_plain_set_drops_it() -> None:
    b = store.open("cache")
    b.set("token", "t0k", ttl=60)
    b.set("forever", "x")
    b.set_bytes("hits", b"1", ttl=10)
    assert b.increment("hits") == 2
    testing.store.advance(59)
    assert b.get("token") == "t0k"
    assert b.get("hits") is None, "increment kept the 10 s ttl"
    testing.store.advance(1)
    assert b.get("token") is None
    assert not b.exists("token")
    assert b.keys() == ["forever"]

    b.set("k", "v", ttl=5)
    b.set("k", "v")
    testing.store.advance(10)
    assert b.get("k") == "v"

    for ttl in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            b.set("k", "v", ttl=ttl)
    with pytest.raises(TypeError):
        b.set("k", "v", ttl=1.5)  # type: ignore[arg-type]


def test_keys_every_page_by_prefix_in_byte_order() -> None:
    b = store.open("keys")
    for key in ["b", "a/2", "a/10", "a/1", "ab", "\U0001f600", "\ufffd"]:
        b.set(key, "v")
    assert b.keys() == ["a/1", "a/10", "a/2", "ab", "b", "\ufffd", "\U0001f600"]
    assert b.keys("a/") == ["a/1", "a/10", "a/2"]
    assert b.keys("zz") == []
    many = store.open("many")
    expected = [f"k{i:05}" for i in range(2500)]
    for key in expected:
        many.set(key, "v")
    assert many.keys() == expected
    assert many.keys("k0249") == expected[2490:2500]


def test_compare_and_swap() -> None:
    b = store.open("cas")
    assert not b.compare_and_swap("k", "x", "1")
    assert b.get("k") is None
    assert b.compare_and_swap("k", None, "1")
    assert not b.compare_and_swap("k", None, "2")
    assert b.compare_and_swap("k", "1", "2")
    assert b.get("k") == "2"
    assert not b.compare_and_swap("k", "1", "3")
    assert b.get("k") == "2"
    assert b.compare_and_swap_bytes("k", b"2", b"\x07")
    assert b.get_bytes("k") == b"\x07"
    b.set("t", "old", ttl=1)
    testing.store.advance(1)
    assert not b.compare_and_swap("t", "old", "new")
    assert b.compare_and_swap("t", None, "new")


def test_a_bucket_not_granted_is_access_denied_naming_the_fix() -> None:
    counters = store.open("counters")
    secrets = store.open("secrets")
    testing.store.grant("counters")
    counters.set("k", "v")
    message = (
        "bucket `secrets` is not granted to this plugin: add it to `stores` "
        "in its [plugins.NAME] table of optech.toml"
    )
    for call in (lambda: secrets.get("k"), lambda: secrets.set("k", "v"), store.open("secrets").keys):
        with pytest.raises(StoreError) as info:
            call()
        assert (info.value.kind, info.value.bucket, str(info.value)) == ("access-denied", "secrets", message)
    testing.store.reset()
    assert secrets.get("k") is None


def test_a_store_that_is_down_fails_every_call_until_it_is_back() -> None:
    b = store.open("counters")
    testing.store.fail("the store is unavailable: disk full")
    with pytest.raises(StoreError, match="^the store is unavailable: disk full$"):
        b.increment("n")
    with pytest.raises(StoreError):
        testing.call(lambda req: {"n": store.open("counters").increment("n")})
    testing.store.fail(None)
    assert b.increment("n") == 1


def test_the_hosts_key_and_value_limits() -> None:
    b = store.open("limits")
    with pytest.raises(StoreError, match="^a key must not be empty$"):
        b.set("", "v")
    with pytest.raises(StoreError, match=r"store\.max_key_size"):
        b.set("k" * 1025, "v")
    b.set("k" * 1024, "v")
    with pytest.raises(StoreError, match=r"store\.max_value_size"):
        b.set_bytes("v", bytes(1024 * 1024 + 1))


def test_open_takes_a_name_and_store_error_carries_kind_and_bucket() -> None:
    with pytest.raises(TypeError):
        store.open("")
    e = StoreError("m", kind="other", bucket="b")
    assert isinstance(e, Exception)
    assert (e.kind, e.bucket, e.message) == ("other", "b", "m")
