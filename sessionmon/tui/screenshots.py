"""Pictures of the real monitor from fixed data: ``python -m sessionmon.tui.screenshots DIR``.

Fixed session ids, a frozen clock and a fixed terminal size make every run draw the same screens
(the snapshot tests use the same data). Saves SVG, and PNG through CairoSVG.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import (
    KIND_ACCESS,
    KIND_REFRESH,
    KIND_SESSION,
    Blacklist,
    RevokeRequest,
    connect,
)
from sessionmon.core.clock import FrozenClock
from sessionmon.core.keys import KeyMaterial
from sessionmon.core.settings import Settings
from sessionmon.core.store import DatabaseUrl, Session, SessionStore, SqliteStore
from sessionmon.core.store.base import RotationRecord
from sessionmon.core.store.schema import ROTATION_HISTORY
from sessionmon.core.tokens import TokenCodec
from sessionmon.demo import AGENTS  # the same browsers as the traffic generator

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from sessionmon.core.doctor import Report
    from sessionmon.tui.app import SessionmonApp

NOW = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC
SIZE = (160, 45)
SMALL = (80, 24)  # the narrowest terminal the monitor is made for
ACCESS_TTL = 900.0
REFRESH_TTL = 7 * 86400.0
IDLE_TIMEOUT = 2 * 3600.0  # the pictures show the lifetime policies' countdowns
ABSOLUTE_TIMEOUT = 14 * 86400.0
# The signing keys: sessions older than a day were signed with the previous one.
CURRENT_KID, PREVIOUS_KID = "5f1c0e2a9b7d4c31", "a93e77d0c2f14b08"
DB_LABEL = "~/.local/share/sessionmon/sessions.db"
REDIS_LABEL = "embedded"

PEOPLE = (
    ("ann.smith@example.com", "Ann Smith"),
    ("bob.okafor@acme.test", "Bob Okafor"),
    ("chen.li@corp.example", "Chen Li"),
    ("dara.novak@mail.example.org", "Dara Novak"),
    ("eli.garcia@shop.test", "Eli Garcia"),
    ("fatima.haddad@example.com", "Fatima Haddad"),
    ("gus.kim@acme.test", "Gus Kim"),
    ("hana.silva@corp.example", "Hana Silva"),
    ("ivan.berg@mail.example.org", "Ivan Berg"),
    ("jo.rossi@shop.test", "Jo Rossi"),
    ("kemal.tanaka@example.com", "Kemal Tanaka"),
    ("lea.dubois@acme.test", "Léa Dubois"),
)
# (person, access seconds left, age of the session, seconds since last seen)
SHAPES = (
    (0, 872, 3_400, 2),
    (1, 505, 86_400 * 2, 40),
    (2, 95, 7_200, 11),
    (3, 31, 600, 3),
    (0, -45, 86_400 * 3 + 3_000, 120),
    (4, 760, 1_800, 8),
    (5, 411, 86_400 * 5, 65),
    (6, 150, 14_000, 22),
    (7, 12, 300, 1),
    (8, -400, 86_400, 700),
    (9, 690, 5_400, 5),
    (10, 250, 40_000, 31),
    (11, 820, 90, 0),
    (1, 333, 9_000, 14),
    (2, 600, 86_400 * 6 + 40_000, 50),
    (5, 58, 2_000, 9),
)


def fixed_id(rng: random.Random) -> str:
    """A 22-character URL-safe id like ``core.tokens.new_id`` makes, from a seeded generator."""
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()


def sample_sessions(now: float = NOW) -> list[Session]:
    """The fixed sessions of the screenshots and snapshot tests."""
    rng = random.Random(1234)
    out = []
    for i, (person, access_left, age, seen) in enumerate(SHAPES):
        email, name = PEOPLE[person]
        created = now - age
        generation = int(age // ACCESS_TTL)
        ip = f"{('192.0.2.', '198.51.100.', '203.0.113.')[i % 3]}{10 + 7 * i}"
        # The last rotations (the newest one 'seen' seconds ago, one per access lifetime).
        rotations = [
            RotationRecord(
                g, now - seen - (generation - g) * ACCESS_TTL, ip, AGENTS[i % len(AGENTS)]
            )
            for g in range(max(1, generation - ROTATION_HISTORY + 1), generation + 1)
        ]
        kid = PREVIOUS_KID if age > 86_400 else CURRENT_KID
        out.append(
            Session(
                id=fixed_id(rng),
                user_id=f"u{1000 + person}",
                email=email,
                name=name,
                created_at=created,
                last_seen_at=now - seen,
                ip=ip,
                user_agent=AGENTS[i % len(AGENTS)],
                access_jti=fixed_id(rng),
                access_exp=now + access_left,
                refresh_jti=fixed_id(rng),
                refresh_exp=created + REFRESH_TTL,
                refresh_count=generation,
                source="demo",
                generation=generation,
                rotated_at=rotations[-1].at if rotations else None,
                access_kid=CURRENT_KID,
                refresh_kid=kid,
                rotations=RotationRecord.dump_list(rotations) if rotations else None,
            )
        )
    return out


def seed(store: SessionStore, blacklist: Blacklist | None, now: float = NOW) -> list[Session]:
    """Write the fixed sessions, and (when Redis is given) some revoked ones to the blacklist."""
    sessions = sample_sessions(now)
    for s in sessions:
        store.insert_session(s)
    rng = random.Random(99)
    revoked = (
        ("mo.patel@shop.test", "u2001", "suspicious IP", 700, 86_400 * 2),
        ("nina.meyer@example.com", "u2002", "password reset", 240, 86_400 * 6),
        ("omar.nguyen@acme.test", "u2003", "user request", 90, 3_600 * 5),
    )
    audit = []
    for email, user, reason, access_left, refresh_left in revoked:
        sid = fixed_id(rng)
        access_jti, refresh_jti = fixed_id(rng), fixed_id(rng)
        if blacklist is not None:
            blacklist.revoke(
                [
                    RevokeRequest(KIND_ACCESS, sid, now + access_left, access_jti, user, email),
                    RevokeRequest(KIND_REFRESH, sid, now + refresh_left, refresh_jti, user, email),
                    RevokeRequest(KIND_SESSION, sid, now + refresh_left, None, user, email),
                ],
                reason=reason,
                actor="oncall",
            )
        audit.append(
            {
                "at": now - 60,
                "actor": "oncall",
                "action": "force_logout",
                "session_id": sid,
                "user_id": user,
                "email": email,
                "reason": reason,
            }
        )
    store.write_audit(audit)
    return sessions


def seed_history(store: SessionStore, now: float = NOW) -> list[Session]:
    """Sessions that ended (logout, force-logout, reuse detection, expiry), through the store's
    own deletion so the history holds them as it would."""
    rng = random.Random(4321)
    ended = (
        ("pia.lund@example.com", "Pia Lund", "logout", "user", "logout", 3_600),
        ("raj.iyer@acme.test", "Raj Iyer", "force_logout", "oncall", "stolen laptop", 2_400),
        ("sam.cole@corp.example", "Sam Cole", "reuse_detected", "system", "refresh_reused", 900),
        ("tia.moss@shop.test", "Tia Moss", "session_ended", "system", "idle", 300),
    )
    sessions = []
    for i, (email, name, action, actor, reason, ago) in enumerate(ended):
        created = now - ago - 7_200
        s = Session(
            id=fixed_id(rng),
            user_id=f"u{3000 + i}",
            email=email,
            name=name,
            created_at=created,
            last_seen_at=now - ago,
            ip=f"198.51.100.{40 + i}",
            user_agent=AGENTS[i % len(AGENTS)],
            access_jti=fixed_id(rng),
            access_exp=now - ago + ACCESS_TTL,
            refresh_jti=fixed_id(rng),
            refresh_exp=created + REFRESH_TTL,
        )
        store.insert_session(s)
        row = {"at": now - ago, "actor": actor, "action": action, "session_id": s.id,
               "user_id": s.user_id, "email": email, "reason": reason}  # fmt: skip
        store.delete_sessions_with_audit([s.id], [row])
        sessions.append(s)
    return sessions


def sample_report(now: float = NOW) -> Report:
    """A fixed health report for the pictures (the real one depends on the machine: memory,
    database size, clock skew): one problem, one warning, the rest ok."""
    from sessionmon.core.doctor import CheckResult, Report, Status

    ok, warn, bad = Status.OK, Status.WARNING, Status.PROBLEM
    checks = (
        CheckResult("redis_eviction", "Redis eviction policy", ok,
                    "maxmemory-policy noeviction, maxmemory 0 (no limit)"),
        CheckResult("redis_persistence", "Redis persistence", warn,
                    "appendonly no, save '': revocations are lost when Redis restarts",
                    "CONFIG SET appendonly yes (and in redis.conf)"),
        CheckResult("redis_replica", "Redis role", ok, "master, 0 replica(s)"),
        CheckResult("redis_memory", "Redis memory", ok, "1.2 MB used, no maxmemory"),
        CheckResult("keys_without_ttl", "Blacklist keys without a TTL", ok, "every key expires"),
        CheckResult("short_ttl", "Blacklist TTLs cover the tokens", ok,
                    "every key outlives its token"),
        CheckResult("index", "Blacklist index matches the keys", ok,
                    "9 key(s), 9 index entries"),
        CheckResult("deleted_but_usable", "Revoked sessions stay revoked", bad,
                    "1 session(s) deleted by a logout whose tokens still work (not on the "
                    "blacklist)", "sessionmon doctor --repair (blacklists them again)",
                    ("37faCgjertoMPJcveb8mlg (raj.iyer@acme.test, force_logout)",), 1),
        CheckResult("clock_skew", "Clock skew", ok,
                    "Redis +0.002 s, database: this host's clock (leeway 10s)"),
        CheckResult("future_tokens", "Tokens issued in the future", ok, "none"),
        CheckResult("expired_waiting", "Expired sessions waiting for purge", ok,
                    "2, the oldest expired 6:40 ago"),
        CheckResult("logout_jobs", "Revoke-by-query jobs finished", ok, "none unfinished"),
        CheckResult("database_size", "Database size and growth", ok,
                    "148.0 KB, 16 live session(s); last 24 h: 16 created, 4 ended (+12)"),
    )  # fmt: skip
    return Report(checks, now)


def seed_events(client: Any, prefix: str, now: float = NOW) -> int:
    """Five minutes of fixed feed up to ``now``: steady logins and refreshes, a few logouts and
    expiries, an operator's force-logout, one stolen refresh token, and a burst of forged tokens
    in the last 40 seconds (what the activity view must make obvious)."""
    from sessionmon.core.event_stream import stream_key
    from sessionmon.core.events import Event, EventKind

    rng = random.Random(7)
    events: list[Event] = []
    people = [(f"u{1000 + i}", email) for i, (email, _) in enumerate(PEOPLE)]
    for second in range(int(now) - 299, int(now) + 1):
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            user, email = rng.choice(people)
            events.append(
                Event(
                    EventKind.LOGIN,
                    second + rng.random(),
                    fixed_id(rng),
                    user,
                    email,
                    ip=f"10.1.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
                )
            )
        for _ in range(rng.choice((2, 3, 3, 4, 5))):
            user, email = rng.choice(people)
            events.append(
                Event(EventKind.ROTATION, second + rng.random(), fixed_id(rng), user, email)
            )
        if rng.random() < 0.08:
            user, email = rng.choice(people)
            events.append(
                Event(
                    EventKind.LOGOUT,
                    second + rng.random(),
                    fixed_id(rng),
                    user,
                    email,
                    reason="logout",
                    actor="user",
                )
            )
        if rng.random() < 0.1:
            user, email = rng.choice(people)
            events.append(
                Event(
                    EventKind.REJECTION,
                    second + rng.random(),
                    fixed_id(rng),
                    user,
                    email,
                    reason="expired",
                )
            )
        if second > now - 40:
            for _ in range(rng.randint(6, 14)):
                events.append(
                    Event(
                        EventKind.REJECTION,
                        second + rng.random(),
                        reason="bad_signature",
                        ip=f"203.0.113.{rng.randint(2, 60)}",
                    )
                )
    events.append(
        Event(
            EventKind.FORCE_LOGOUT,
            now - 200.5,
            None,
            "u2001",
            "mo.patel@shop.test",
            reason="suspicious IP",
            actor="oncall",
            count=3,
        )
    )
    thief = (fixed_id(rng), "u1003", "dara.novak@mail.example.org")
    events.append(
        Event(EventKind.REUSE_DETECTED, now - 95.2, *thief, reason="refresh_reused", actor="system")
    )
    events.append(
        Event(EventKind.REJECTION, now - 95.1, *thief, reason="refresh_reused", ip="198.51.100.23")
    )
    events.sort(key=lambda e: e.at)
    key = stream_key(prefix)
    pipe = client.pipeline(transaction=False)
    last_ms, seq = -1, 0
    for e in events:
        ms = int(e.at * 1000)
        seq = seq + 1 if ms == last_ms else 0
        last_ms = ms
        pipe.xadd(key, e.fields(), id=f"{ms}-{seq}")
    pipe.execute()
    return len(events)


def sample_settings(db: DatabaseUrl | Path, read_only: bool = False) -> Settings:
    return Settings(
        db=DatabaseUrl.parse(db),
        access_ttl=ACCESS_TTL,
        refresh_ttl=REFRESH_TTL,
        actor="oncall",
        interval=3600.0,  # one poll at start: pictures never depend on timing
        read_only=read_only,
        idle_timeout=IDLE_TIMEOUT,
        absolute_timeout=ABSOLUTE_TIMEOUT,
    )


def build_app(
    store: SessionStore, blacklist: Blacklist, clock: FrozenClock, settings: Settings
) -> SessionmonApp:
    """The real app on fixed data, with labels that do not depend on temporary paths."""
    from sessionmon.tui.app import SessionmonApp

    keys = KeyMaterial("HS256", b"screenshots-only", b"screenshots-only", "screenshots")
    codec = TokenCodec(keys, leeway=10, clock=clock)
    auth = Auth(
        store, blacklist, codec, access_ttl=ACCESS_TTL, refresh_ttl=REFRESH_TTL, clock=clock
    )
    return SessionmonApp(
        store=store,
        blacklist=blacklist,
        auth=auth,
        settings=settings,
        clock=clock,
        db_label=DB_LABEL,
        redis_label=REDIS_LABEL,
    )


def freeze_latency(blacklist: Blacklist, seconds: float = 0.0004) -> None:
    """Ping Redis for real but report a fixed latency (pictures must not change run to run)."""
    real_ping = blacklist.ping

    def ping() -> float:
        real_ping()
        return seconds

    blacklist.ping = ping  # type: ignore[method-assign]


def dead_redis_url() -> str:
    """A Redis URL nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


Steps = Callable[["Pilot[Any]"], Awaitable[None]]


def app_of(pilot: Pilot[Any]) -> SessionmonApp:
    """The monitor that ``pilot`` drives."""
    return cast("SessionmonApp", pilot.app)


async def wait_until(pilot: Pilot[Any], check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``check()`` is true (polls are real work in threads)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the monitor did not reach the expected state")
        await pilot.pause(0.02)


async def settle(pilot: Pilot[Any]) -> None:
    """Wait for the first poll and the detail pane."""
    from sessionmon.core.event_rates import FeedState
    from sessionmon.tui.widgets.detail_pane import DetailPane

    app = app_of(pilot)
    await wait_until(pilot, lambda: app.snapshot is not None and app.model.loaded)
    # The status bar's event rates: read once (the clock is frozen, so they stay as read).
    await wait_until(pilot, lambda: app.rates.state is not FeedState.STARTING)
    detail = app.main.query_one("#detail", DetailPane)
    await wait_until(pilot, lambda: detail.detail is not None or True)
    await pilot.pause(0.1)
    await app.workers.wait_for_complete()
    await pilot.pause()


async def _shoot(
    out: Path,
    name: str,
    store: SessionStore,
    blacklist: Blacklist,
    steps: Steps | None = None,
    size: tuple[int, int] = SIZE,
) -> Path:
    clock = FrozenClock(NOW)
    blacklist.clock = clock
    app = build_app(store, blacklist, clock, sample_settings(store.location))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        if steps is not None:
            await steps(pilot)
            await pilot.pause(0.1)
        path = out / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(out))
    return path


async def _confirm(pilot: Pilot[Any]) -> None:
    await pilot.press("down", "down")
    await pilot.press("l")
    await pilot.pause(0.1)


async def _filtered(pilot: Pilot[Any]) -> None:
    await pilot.press("slash", *"acme")
    app = app_of(pilot)
    await wait_until(pilot, lambda: app.model.query.text == "acme")
    await app.workers.wait_for_complete()
    await wait_until(pilot, lambda: len(app.model) == 4)
    await pilot.press("enter")


async def _help(pilot: Pilot[Any]) -> None:
    await pilot.press("question_mark")


async def _blacklist(pilot: Pilot[Any]) -> None:
    await pilot.press("tab")


async def blacklist_filtered(pilot: Pilot[Any]) -> None:
    """Switch to the blacklist view and filter it (also used by the snapshot tests)."""
    await pilot.press("tab", "slash", *"nina")
    await wait_until(pilot, lambda: app_of(pilot).main.blacklist.search is not None)
    await pilot.press("enter")


async def to_health(pilot: Pilot[Any]) -> None:
    """The health view with the fixed report (also used by the snapshot tests)."""
    from sessionmon.tui.widgets.health_view import HealthView

    app = app_of(pilot)
    app.backend.health = lambda clock=None: sample_report()  # type: ignore[method-assign]
    await pilot.press("tab", "tab")
    view = app.main.query_one(HealthView)
    await wait_until(pilot, lambda: view.loads >= 1)
    await pilot.pause()


async def to_history(pilot: Pilot[Any]) -> None:
    """The history screen, searched for a reason (also used by the snapshot tests)."""
    from sessionmon.tui.screens.history import HistoryScreen

    app = app_of(pilot)
    await pilot.press("H")
    await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
    screen = cast("HistoryScreen", app.screen)
    await wait_until(pilot, lambda: screen.loads >= 1 and len(screen.rows) == 4)
    await pilot.pause()


async def activity(pilot: Pilot[Any]) -> None:
    """The activity view on the seeded feed (also used by the snapshot tests)."""
    from sessionmon.tui.screens.activity import ActivityScreen

    await pilot.press("e")
    app = app_of(pilot)
    await wait_until(pilot, lambda: isinstance(app.screen, ActivityScreen) and app.screen.live)
    await pilot.pause(0.1)


async def make_all(out: Path) -> list[Path]:
    """Every picture: main (and at 80x24), confirm dialog, Redis down, filtered views, help,
    blacklist view."""
    from sessionmon.core.embedded import EmbeddedRedis

    out.mkdir(parents=True, exist_ok=True)
    made = []
    with tempfile.TemporaryDirectory(prefix="sessionmon-shots-") as tmp:
        db = Path(tmp) / "sessions.db"
        embedded = EmbeddedRedis(db)
        url = embedded.start()
        client = connect(url)
        try:
            client.flushdb()
            store = SqliteStore(db, clock=FrozenClock(NOW))
            blacklist = Blacklist(client, prefix="shots:", leeway=10, clock=FrozenClock(NOW))
            seed(store, blacklist)
            seed_history(store)
            seed_events(client, "shots:")
            freeze_latency(blacklist)
            for name, steps in (
                ("main", None),
                ("confirm", _confirm),
                ("filtered", _filtered),
                ("help", _help),
                ("blacklist", _blacklist),
                ("blacklist-filtered", blacklist_filtered),
                ("health", to_health),
                ("history", to_history),
                ("activity", activity),
            ):
                made.append(await _shoot(out, name, store, blacklist, steps))
            made.append(await _shoot(out, "main-80x24", store, blacklist, size=SMALL))
            down = Blacklist(connect(dead_redis_url(), timeout=0.5), prefix="shots:", leeway=10)
            made.append(await _shoot(out, "redis-down", store, down))
            store.close()
        finally:
            client.close()
            embedded.stop(force=True)
    return made


# Rich's SVG asks for "Fira Code, monospace" (a web font); CairoSVG uses the first family only,
# and fontconfig would answer a missing "Fira Code" with a proportional font.
FONT_FAMILY = re.compile(r"font-family:\s*\"?Fira Code\"?,\s*monospace;")


def to_png(svgs: list[Path]) -> list[Path]:
    """PNG copies of the SVGs, drawn by CairoSVG (the ``test`` extra; it needs libcairo)."""
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # OSError: cairocffi found no libcairo
        raise RuntimeError(
            f"cannot draw PNGs: {exc} (pip install cairosvg; apt-get install libcairo2)"
        ) from None
    pngs = []
    for svg in svgs:
        png = svg.with_suffix(".png")
        text = svg.read_text(encoding="utf-8")
        text = FONT_FAMILY.sub("font-family: monospace;", text)
        # Rich writes runs of spaces as no-break spaces; keep white space as written, or text
        # elements that start with spaces shift and right-aligned cells move left.
        text = text.replace("<svg ", '<svg xml:space="preserve" ', 1)
        cairosvg.svg2png(bytestring=text.encode("utf-8"), write_to=str(png))
        pngs.append(png)
    return pngs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    os.environ["TZ"] = "UTC"
    with contextlib.suppress(AttributeError):
        time.tzset()
    svgs = asyncio.run(make_all(out))
    for path in svgs:
        print(path)
    try:
        pngs = to_png(svgs)
    except RuntimeError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    for path in pngs:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
