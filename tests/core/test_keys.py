"""Key sets: states, kid selection, rotation and retirement seen across processes, generated
key sets for every algorithm, the configured single key, the legacy secret, weak secrets, audit."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import jwt
import pytest

from sessionmon.core.clock import FrozenClock
from sessionmon.core.errors import ConfigError, DatabaseMissing, KeySetError
from sessionmon.core.keyadmin import KeyAdmin
from sessionmon.core.keydir import KeyDirectory, key_dir_for
from sessionmon.core.keyring import PROPAGATION, KeyState
from sessionmon.core.keys import HMAC_MIN_BYTES, KeyMaterial, derive_kid, generate_key
from sessionmon.core.keysource import LiveKeys, StaticKeys, key_directory, open_keys
from sessionmon.core.settings import Settings, load_settings
from sessionmon.core.store import SessionStore
from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenCodec, TokenRejected
from tests.core.forge import b64url_json, hs_token, segments
from tests.support.waiting import wait_until

ASYMMETRIC = ("RS256", "PS256", "ES256", "EdDSA")


def reason(codec: TokenCodec, token: str, typ: str = ACCESS) -> Reason:
    with pytest.raises(TokenRejected) as info:
        codec.verify(token, typ)
    return info.value.reason


def live(path: Path, algorithm: str = "HS256", clock: FrozenClock | None = None) -> LiveKeys:
    """What one process opens: the key set in ``path`` (generated when missing)."""
    directory = KeyDirectory(path, algorithm, clock or FrozenClock(time.time()))
    directory.ensure()
    return LiveKeys(directory)


def states(keys: LiveKeys) -> dict[str, KeyState]:
    return {e.kid: e.state for e in keys.refresh()}


# -- the lifecycle ---------------------------------------------------------------------------


def test_generated_set_has_a_current_and_a_next_key_in_private_files(tmp_path: Path) -> None:
    keys = live(tmp_path / "keys")
    ring = keys.ring()
    assert sorted(e.state.value for e in ring) == ["current", "next"]
    assert ring.managed and ring.current.material is not None
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for path in (tmp_path / "keys").iterdir():
        want = 0o644 if path.name == "jwks.json" else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    # The kid is the key's thumbprint: reading the file back gives the same kid.
    assert derive_kid(ring.current.material) == ring.current.kid
    for _ in range(50):  # hex: never an option-looking "-..." on a command line
        kid = generate_key("HS256").kid
        assert len(kid) == 16 and all(c in "0123456789abcdef" for c in kid)


def test_rotate_moves_every_state_and_retire_rejects_its_tokens(tmp_path: Path) -> None:
    clock = FrozenClock(time.time())
    keys = live(tmp_path / "keys", clock=clock)
    codec = TokenCodec(keys, clock=clock)
    first, _ = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    kid1 = segments(first)[0]["kid"]
    (kid2,) = [e.kid for e in keys.ring() if e.state is KeyState.NEXT]

    change = KeyDirectory(tmp_path / "keys", "HS256", clock).rotate(overlap=3600)
    assert change.kid == kid2
    now = states(keys)
    assert now[kid1] is KeyState.PREVIOUS and now[kid2] is KeyState.CURRENT
    (kid3,) = [k for k, s in now.items() if s is KeyState.NEXT]
    second, _ = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    assert segments(second)[0]["kid"] == kid2
    assert codec.verify(first).sid == codec.verify(second).sid == "s"  # previous still verifies

    directory = KeyDirectory(tmp_path / "keys", "HS256", clock)
    with pytest.raises(KeySetError, match="current key"):
        directory.retire(kid2)
    with pytest.raises(KeySetError, match="no HS256 key with kid 'nope'"):
        directory.retire("nope")
    directory.retire(kid1)
    keys.refresh()
    assert reason(codec, first) is Reason.UNKNOWN_KEY
    assert not (tmp_path / "keys" / f"HS256-{kid1}.key").exists()  # its secret is gone
    with pytest.raises(KeySetError, match="already retired"):
        directory.retire(kid1)
    # Retiring the next key makes a new one, so that a rotation always has a key to promote.
    directory.retire(kid3)
    assert sum(s is KeyState.NEXT for s in states(keys).values()) == 1
    assert codec.verify(second).sid == "s"


def test_a_previous_key_is_retired_by_the_rotation_after_its_overlap(tmp_path: Path) -> None:
    clock = FrozenClock(time.time())
    keys = live(tmp_path / "keys", clock=clock)
    directory = KeyDirectory(tmp_path / "keys", "HS256", clock)
    kid1 = keys.ring().current.kid
    directory.rotate(overlap=100)
    entry = keys.refresh().get(kid1)
    assert entry is not None and entry.can_go_at(100) == clock.now() + 100 + PROPAGATION
    clock.advance(50)
    directory.rotate(overlap=100)  # kid1 is still needed: it stays
    assert states(keys)[kid1] is KeyState.PREVIOUS
    clock.advance(51 + PROPAGATION)
    directory.rotate(overlap=100)
    assert states(keys)[kid1] is KeyState.RETIRED
    assert list(states(keys).values()).count(KeyState.PREVIOUS) == 2


def test_token_without_kid_is_verified_with_the_current_key_only(tmp_path: Path) -> None:
    clock = FrozenClock(time.time())
    keys = live(tmp_path / "keys", clock=clock)
    codec = TokenCodec(keys, clock=clock)
    secret = keys.ring().current.material.signing_key  # type: ignore[union-attr]
    token, _ = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    header, payload, _ = segments(token)
    unnamed = hs_token({"alg": "HS256", "typ": "JWT"}, payload, secret)
    assert codec.verify(unnamed).sid == "s"  # the original design's tokens: no kid
    KeyDirectory(tmp_path / "keys", "HS256", clock).rotate(overlap=3600)
    keys.refresh()
    assert reason(codec, unnamed) is Reason.BAD_SIGNATURE  # not tried with the previous key
    assert codec.verify(token).sid == "s"  # with its kid it still verifies
    assert reason(codec, hs_token({**header, "kid": "x" * 16}, payload, secret)) is (
        Reason.UNKNOWN_KEY
    )


def test_fast_path_follows_the_current_key(tmp_path: Path) -> None:
    clock = FrozenClock(time.time())
    keys = live(tmp_path / "keys", clock=clock)
    codec = TokenCodec(keys, clock=clock)
    token, minted = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    fast = codec._fast
    assert fast is not None and fast.kid == keys.ring().current.kid
    assert fast.accept(token) == minted.raw
    KeyDirectory(tmp_path / "keys", "HS256", clock).rotate(overlap=3600)
    keys.refresh()
    assert codec._fast is not None and codec._fast is not fast
    assert codec._fast.accept(token) is None  # the previous key's token: the PyJWT path
    assert codec.verify(token).jti == minted.jti
    new, minted2 = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    assert codec._fast.accept(new) == minted2.raw


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
def test_generated_asymmetric_sets_rotate_and_publish_public_keys(
    tmp_path: Path, algorithm: str
) -> None:
    clock = FrozenClock(time.time())
    keys = live(tmp_path / "keys", algorithm, clock)
    codec = TokenCodec(keys, clock=clock)
    token, _ = codec.mint(REFRESH, sub="u", sid="s", ttl=600)
    assert segments(token)[0] == {"alg": algorithm, "kid": keys.ring().current.kid, "typ": "JWT"}
    KeyDirectory(tmp_path / "keys", algorithm, clock).rotate(overlap=3600)
    keys.refresh()
    newer, _ = codec.mint(REFRESH, sub="u", sid="s", ttl=600)
    jwks = keys.ring().jwks()
    assert json.loads((tmp_path / "keys" / "jwks.json").read_text()) == jwks
    by_kid = {k["kid"]: k for k in jwks["keys"]}
    assert len(by_kid) == 3 and all(k["alg"] == algorithm for k in by_kid.values())
    for t in (token, newer):
        assert codec.verify(t, REFRESH).sid == "s"
        jwk = by_kid[segments(t)[0]["kid"]]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & jwk.keys()  # nothing private
        public = jwt.PyJWK(jwk).key
        assert jwt.decode(t, public, algorithms=[algorithm])["sid"] == "s"


# -- one process sees another's change -------------------------------------------------------


def test_another_process_sees_rotation_and_retirement_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    web = live(path)  # e.g. a web worker
    codec = TokenCodec(web)
    token, _ = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    old = web.ring().current.kid
    operator = KeyDirectory(path, "HS256")  # e.g. `sessionmon keys rotate` elsewhere
    operator.rotate(overlap=3600)
    took = wait_until(
        lambda: segments(codec.mint(ACCESS, sub="u", sid="s", ttl=60)[0])[0]["kid"] != old,
        "the rotation to be seen",
    )
    assert took < 1.0
    operator.retire(old)

    def rejected() -> bool:
        try:
            codec.verify(token)
        except TokenRejected as exc:
            return exc.reason is Reason.UNKNOWN_KEY
        return False

    assert wait_until(rejected, "the retirement to be seen") < 1.0


def test_unknown_kid_makes_the_verifier_look_again_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    signer, verifier = TokenCodec(live(path)), TokenCodec(LiveKeys(KeyDirectory(path, "HS256"), 60))
    operator = KeyDirectory(path, "HS256")
    operator.rotate(overlap=3600)
    operator.rotate(overlap=3600)  # twice: the new current key was unknown to the verifier
    signer.key_source.refresh()
    token, _ = signer.mint(ACCESS, sub="u", sid="s", ttl=600)
    assert verifier.verify(token).sid == "s"  # its 60 s poll did not make it wait


def test_rotation_under_load_fails_no_verification(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    minter, verifier = TokenCodec(live(path)), TokenCodec(live(path))
    stop = threading.Event()
    counts = {"ok": 0}
    failures: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while not stop.is_set():
            token, _ = minter.mint(ACCESS, sub="u", sid="s", ttl=600)
            for codec in (verifier, minter):
                try:
                    codec.verify(token)
                except TokenRejected as exc:
                    with lock:
                        failures.append(f"{exc.reason}: {exc.detail}")
                else:
                    with lock:
                        counts["ok"] += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    operator = KeyDirectory(path, "HS256")
    try:
        for _ in range(5):
            before, kid = counts["ok"], operator.rotate(overlap=3600).kid
            wait_until(lambda k=kid: minter.keys.kid == k, "the minter to rotate")
            wait_until(
                lambda b=before: counts["ok"] > b + 50,
                "verifications after the rotation",
            )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert counts["ok"] > 500


# -- where the keys come from ----------------------------------------------------------------


def test_configured_secret_is_the_current_key_and_cannot_be_rotated(
    tmp_path: Path, store: SessionStore
) -> None:
    secret = "s" * 40
    s = Settings(db=tmp_path / "x.db", redis_url="redis://h/0")
    keys = open_keys(s, env={"SESSIONMON_SECRET": secret})
    assert isinstance(keys, StaticKeys) and not keys.ring().managed
    kid = keys.ring().current.kid
    assert kid == derive_kid(KeyMaterial("HS256", secret.encode(), secret.encode()))
    assert kid == open_keys(s, env={"SESSIONMON_SECRET": secret}).ring().current.kid  # stable
    admin = KeyAdmin(s, store, keys=keys)
    with pytest.raises(KeySetError, match="SESSIONMON_KEY_DIR"):
        admin.rotate("ops")
    with pytest.raises(ConfigError, match="use one of the two"):
        open_keys(s.with_(key_dir=tmp_path / "k"), env={"SESSIONMON_SECRET": secret})
    assert store.audit() == []


def test_legacy_generated_secret_is_adopted_and_its_tokens_keep_working(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    secret = b"L" * 64
    (tmp_path / "sessions.db.secret").write_bytes(secret)
    old_token = jwt.encode(
        {"sub": "u", "sid": "s", "jti": "j", "exp": int(time.time()) + 600, "typ": "access"},
        secret,
        algorithm="HS256",
    )  # as earlier versions minted: no kid
    codec = TokenCodec(open_keys(Settings(db=db), env={}))
    assert codec.keys.signing_key == secret
    assert codec.verify(old_token).sid == "s"
    assert (key_dir_for(db) / "state.json").exists()
    assert not (tmp_path / "sessions.db.secret").exists()  # one copy of the secret, not two
    assert TokenCodec(open_keys(Settings(db=db), env={})).verify(old_token).sid == "s"


def test_embedded_default_generates_any_algorithm_and_postgres_uses_its_anchor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    s = Settings(db="postgresql://u@db.example:5433/app", algorithm="ES256")
    directory = key_directory(s)
    assert directory is not None and directory.path == key_dir_for(s.db.anchor)
    assert directory.path.is_relative_to(tmp_path / "data")
    keys = open_keys(s, env={})
    assert keys.ring().algorithm == "ES256" and directory.state_path.exists()
    # With a Redis URL and no key directory yet, nothing is generated (as for the secret).
    other = Settings(db=tmp_path / "y.db", redis_url="redis://h/0", algorithm="EdDSA")
    with pytest.raises(ConfigError, match="SESSIONMON_KEY_DIR"):
        open_keys(other, env={})
    # A named key directory is used (and filled) with any backend; its parent must exist.
    assert open_keys(other.with_(key_dir=tmp_path / "k"), env={}).ring().algorithm == "EdDSA"
    with pytest.raises(ConfigError, match="does not exist"):
        open_keys(other.with_(key_dir=tmp_path / "no" / "k"), env={})


def test_no_key_set_is_generated_beside_a_missing_database(tmp_path: Path) -> None:
    s = Settings(db=tmp_path / "typo.db")
    with pytest.raises(DatabaseMissing):
        open_keys(s, env={}, may_generate=False)
    assert not key_dir_for(tmp_path / "typo.db").exists()


def test_a_damaged_key_set_fails_closed(tmp_path: Path) -> None:
    keys = live(tmp_path / "keys")
    codec = TokenCodec(keys)
    token, _ = codec.mint(ACCESS, sub="u", sid="s", ttl=600)
    (tmp_path / "keys" / "state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        keys.refresh()
    with pytest.raises(ConfigError):
        TokenCodec(keys).verify(token)


# -- weak secrets ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(HMAC_MIN_BYTES))
def test_weak_secret_is_refused_unless_allowed(tmp_path: Path, algorithm: str) -> None:
    need = HMAC_MIN_BYTES[algorithm]
    s = Settings(db=tmp_path / "x.db", redis_url="redis://h/0", algorithm=algorithm)
    with pytest.raises(ConfigError) as info:
        open_keys(s, env={"SESSIONMON_SECRET": "k" * (need - 1)})
    message = str(info.value)
    assert f"at least {need}" in message and "--allow-weak-secret" in message
    assert "k" * (need - 1) not in message
    assert open_keys(s, env={"SESSIONMON_SECRET": "k" * need}).ring().algorithm == algorithm
    weak_file = tmp_path / "weak"
    weak_file.write_text("short\n")
    with pytest.raises(ConfigError, match=f"secret file {weak_file} is 5 bytes"):
        open_keys(s, env={"SESSIONMON_SECRET_FILE": str(weak_file)})
    allowed = load_settings({}, env={"SESSIONMON_ALLOW_WEAK_SECRET": "1"})
    assert allowed.allow_weak_secret
    assert open_keys(s.with_(allow_weak_secret=True), env={"SESSIONMON_SECRET": "short"})


# -- the operator's actions are audited (both store backends) --------------------------------


def test_rotate_retire_export_are_audited(tmp_path: Path, store: SessionStore) -> None:
    clock = FrozenClock(time.time())
    s = Settings(db=tmp_path / "x.db", key_dir=tmp_path / "keys", algorithm="ES256")
    admin = KeyAdmin(s, store, keys=open_keys(s, env={}, clock=clock), clock=clock)
    old = admin.listing().ring.current.kid
    change = admin.rotate("ops", "scheduled")
    retired = admin.retire(old, "ops", "leaked")
    jwks = admin.export_jwks("ops")
    assert old not in {k["kid"] for k in jwks["keys"]} and len(jwks["keys"]) == 2
    rows = {r.action: r for r in store.audit()}
    assert rows["keys_rotate"].actor == "ops" and rows["keys_rotate"].reason == "scheduled"
    assert change.kid in rows["keys_rotate"].outcome
    assert rows["keys_retire"].revoked == [f"kid:{old}"] and rows["keys_retire"].reason == "leaked"
    assert retired.changes[0] == (old, "previous", "retired")
    assert rows["keys_export_jwks"].outcome.startswith("ok")
    listing = admin.listing().to_dicts()
    assert [d["state"] for d in listing] == ["next", "current", "retired"]


def test_jwks_never_holds_a_secret(tmp_path: Path) -> None:
    keys = live(tmp_path / "keys")
    assert keys.ring().jwks() == {"keys": []}
    secret = keys.ring().current.material.signing_key  # type: ignore[union-attr]
    assert secret.decode() not in (tmp_path / "keys" / "jwks.json").read_text()
    assert b64url_json(secret.decode())[:20] not in (tmp_path / "keys" / "jwks.json").read_text()
