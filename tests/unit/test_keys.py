"""API keys: the `gw_<key_id>_<secret>` format, hash-only verification and the KeyRing cache."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keys import KeyRing, Scope, generate_key, hash_secret, parse_key, parse_scopes, verify
from app.storage import ApiKeyRow, EmbeddedStore
from tests.support.clock import FakeClock

KEY_SHAPE = re.compile(r"gw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
VALID = "gw_0123456789ab_" + "A" * 20 + "_-" + "z" * 21
NOT_IN_KEYS = "=+/ .:!\n\t\x00é"


def test_generated_key_has_the_documented_format() -> None:
    key, key_id, key_hash = generate_key()

    assert KEY_SHAPE.fullmatch(key)
    assert key.startswith(f"gw_{key_id}_")
    secret = key[len(f"gw_{key_id}_") :]
    assert len(secret) == 43  # 32 random bytes, base64url without padding
    assert key_hash == hashlib.sha256(secret.encode()).hexdigest() == hash_secret(secret)
    assert parse_key(key) == (key_id, secret)


def test_generated_keys_are_unique() -> None:
    generated = [generate_key() for _ in range(200)]
    assert len({key for key, _, _ in generated}) == 200
    assert len({key_id for _, key_id, _ in generated}) == 200


def test_a_secret_containing_underscores_parses() -> None:
    assert parse_key(VALID) == ("0123456789ab", VALID[len("gw_0123456789ab_") :])


@given(st.text(max_size=80))
def test_arbitrary_text_is_not_a_key(text: str) -> None:
    assert (parse_key(text) is not None) == bool(KEY_SHAPE.fullmatch(text))


@given(st.data())
def test_any_single_edit_of_a_key_is_rejected(data: st.DataObject) -> None:
    key, _, _ = generate_key()
    position = data.draw(st.integers(0, len(key)), label="position")
    edit = data.draw(st.sampled_from(["delete", "insert", "replace"]), label="edit")
    if edit == "delete":
        position = min(position, len(key) - 1)
        mutated = key[:position] + key[position + 1 :]
    elif edit == "insert":  # any character, even a valid one, makes a part too long
        char = data.draw(st.characters(), label="char")
        mutated = key[:position] + char + key[position:]
    else:
        position = min(position, len(key) - 1)
        char = data.draw(st.sampled_from(NOT_IN_KEYS), label="char")
        mutated = key[:position] + char + key[position + 1 :]
    assert parse_key(mutated) is None


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "gw__",
        VALID.upper(),  # key_id is lowercase hex
        VALID + "\n",
        " " + VALID,
        "Bearer " + VALID,
        VALID.replace("gw_", "gk_", 1),
        VALID.replace("0123456789ab", "0123456789aG"),
    ],
)
def test_malformed_keys_are_rejected(presented: str) -> None:
    assert parse_key(presented) is None


def test_verify_accepts_only_the_matching_secret() -> None:
    key, _, key_hash = generate_key()
    parsed = parse_key(key)
    assert parsed is not None
    assert verify(parsed[1], key_hash) is True
    assert verify(parsed[1][:-1] + "x", key_hash) is False
    assert verify(parsed[1], key_hash.upper()) is False
    assert verify(parsed[1], "") is False


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module app.keys calls
    assert verify("secret", hash_secret("secret")) is True
    assert verify("guess", hash_secret("secret")) is False
    assert len(calls) == 2


def test_scopes_are_a_closed_set() -> None:
    assert parse_scopes("data:read, trading:read,data:read") == (
        Scope.DATA_READ,
        Scope.TRADING_READ,
    )
    assert parse_scopes(["trading:write"]) == (Scope.TRADING_WRITE,)
    with pytest.raises(ValueError, match="unknown scope 'admin'"):
        parse_scopes("data:read,admin")
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes("")


# --- KeyRing over a real (embedded) store -----------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    opened = await EmbeddedStore.open(tmp_path / "keys.sqlite3")
    await opened.migrate()
    yield opened
    await opened.close()


async def add_key(store: EmbeddedStore, *scopes: Scope) -> tuple[str, str]:
    """A stored key; returns (full key, key_id)."""
    key, key_id, key_hash = generate_key()
    await store.insert_api_key(
        ApiKeyRow(
            id=key_id,
            name="test",
            key_prefix=f"gw_{key_id}",
            key_hash=key_hash,
            scopes=tuple(s.value for s in scopes or (Scope.DATA_READ,)),
            created_at=datetime.now(UTC),
        )
    )
    return key, key_id


async def test_a_valid_key_authenticates_with_its_scopes(store: EmbeddedStore) -> None:
    key, key_id = await add_key(store, Scope.DATA_READ, Scope.TRADING_WRITE)
    ring = KeyRing(store)
    row = await ring.authenticate(key)
    assert row is not None
    assert row.id == key_id
    assert row.scopes == ("data:read", "trading:write")
    await ring.aclose()


async def test_malformed_unknown_and_wrong_keys_are_all_none(store: EmbeddedStore) -> None:
    key, key_id = await add_key(store)
    ring = KeyRing(store)
    unknown, _, _ = generate_key()
    wrong_secret = f"gw_{key_id}_" + "A" * 43

    assert await ring.authenticate("not a key") is None
    assert await ring.authenticate(unknown) is None
    assert await ring.authenticate(wrong_secret) is None
    assert await ring.authenticate(key) is not None
    # A cached key still checks the secret it is presented with.
    assert await ring.authenticate(wrong_secret) is None
    await ring.aclose()


async def test_revoked_key_is_none(store: EmbeddedStore) -> None:
    key, key_id = await add_key(store)
    await store.revoke_api_key(key_id)
    ring = KeyRing(store)
    assert await ring.authenticate(key) is None


async def test_positive_lookups_are_cached_for_ttl_then_reread(store: EmbeddedStore) -> None:
    key, key_id = await add_key(store)
    clock = FakeClock()
    ring = KeyRing(store, ttl_s=1.0, clock=clock)
    assert await ring.authenticate(key) is not None

    await store.revoke_api_key(key_id)  # as the CLI in another process would
    clock.now += 0.9
    assert await ring.authenticate(key) is not None  # still within ttl_s
    clock.now += 0.2
    assert await ring.authenticate(key) is None  # re-read after ttl_s: revoked
    await ring.aclose()


async def test_a_cached_key_answers_without_the_store(store: EmbeddedStore) -> None:
    key, _ = await add_key(store)
    clock = FakeClock()
    ring = KeyRing(store, ttl_s=1.0, clock=clock, touch_interval_s=3600)
    assert await ring.authenticate(key) is not None
    await ring.aclose()
    await store.close()
    assert await ring.authenticate(key) is not None


async def test_forget_makes_a_revocation_immediate(store: EmbeddedStore) -> None:
    key, key_id = await add_key(store)
    ring = KeyRing(store, ttl_s=60.0, clock=FakeClock())
    assert await ring.authenticate(key) is not None

    await store.revoke_api_key(key_id)
    ring.forget(key_id)
    assert await ring.authenticate(key) is None


async def test_last_used_is_recorded_at_most_once_a_minute(store: EmbeddedStore) -> None:
    key, key_id = await add_key(store)
    clock = FakeClock()
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def now() -> datetime:
        return start + timedelta(seconds=clock.now - 1000.0)

    ring = KeyRing(store, ttl_s=1.0, clock=clock, now=now)

    async def last_used() -> datetime | None:
        await ring.aclose()  # the update is fire-and-forget: wait for it here
        row = await store.get_api_key(key_id)
        assert row is not None
        return row.last_used_at

    assert await ring.authenticate(key) is not None
    assert await last_used() == start
    clock.now += 30
    assert await ring.authenticate(key) is not None
    assert await last_used() == start  # within the minute: not written again
    clock.now += 31
    assert await ring.authenticate(key) is not None
    assert await last_used() == start + timedelta(seconds=61)


async def test_a_failed_last_used_update_does_not_fail_authentication(tmp_path: Path) -> None:
    store = await EmbeddedStore.open(tmp_path / "keys.sqlite3")
    await store.migrate()
    key, _ = await add_key(store)
    clock = FakeClock()
    ring = KeyRing(store, clock=clock, touch_interval_s=0)
    assert await ring.authenticate(key) is not None
    await ring.aclose()
    await store.close()

    clock.now += 0.5
    assert await ring.authenticate(key) is not None  # from the cache; its touch fails
    await ring.aclose()  # the failed bookkeeping update raised nothing


async def test_the_key_cache_is_bounded_and_forgets_the_oldest(store: EmbeddedStore) -> None:
    keys = [(await add_key(store))[0] for _ in range(4)]
    ring = KeyRing(store, ttl_s=60.0, max_entries=2)

    for key in keys:
        assert await ring.authenticate(key) is not None
    await ring.aclose()

    assert ring.size() == 2
    # Forgotten keys still work: they are read from the store again.
    assert await KeyRing(store, max_entries=2).authenticate(keys[0]) is not None
