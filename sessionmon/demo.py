"""The traffic generator: simulated users driving the real auth core.

Users log in (varied emails, IPs and browsers), make authenticated requests at random intervals,
silently refresh, some log out, some go idle until their tokens expire. It is what makes the monitor
come alive. Sessions it creates are marked ``source = "demo"``; it refuses a database that holds
sessions it did not create (a real user database must never receive fake sessions by accident).
When it stops it logs out the sessions it created that are still there (audited as actor
``demo``), so the next monitor does not open on a screen of its stale rows.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sessionmon.core.auth import Auth
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.errors import ConfigError, DatabaseError, RedisUnavailable
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore, open_store
from sessionmon.core.tokens import Reason

DEMO_SOURCE = "demo"
DEMO_ACTOR = "demo"
DEMO_ACCESS_TTL = 20.0
DEMO_REFRESH_TTL = 180.0

FIRST = (
    "ann",
    "bob",
    "chen",
    "dara",
    "eli",
    "fatima",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kemal",
    "lea",
    "mo",
    "nina",
    "omar",
    "priya",
    "quinn",
    "rosa",
    "sam",
    "tariq",
    "uma",
    "vic",
    "wen",
    "yara",
)
LAST = (
    "smith",
    "okafor",
    "li",
    "novak",
    "garcia",
    "haddad",
    "kim",
    "silva",
    "berg",
    "rossi",
    "tanaka",
    "dubois",
    "kowalski",
    "nguyen",
    "meyer",
    "patel",
)
DOMAINS = ("example.com", "acme.test", "corp.example", "mail.example.org", "shop.test")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 Chrome/130.0 Mobile Safari",
    "curl/8.10.1",
    "python-httpx/0.28.1",
)
NETWORKS = ("192.0.2.", "198.51.100.", "203.0.113.")


def demo_ttls(settings: Settings) -> Settings:
    """Short token lives for the demo (access 20s, refresh 3m), so countdowns visibly move and
    silent refreshes happen, unless a flag, env var or the config file set them."""
    changes = {}
    if "access_ttl" not in settings.explicit:
        changes["access_ttl"] = DEMO_ACCESS_TTL
    if "refresh_ttl" not in settings.explicit:
        changes["refresh_ttl"] = DEMO_REFRESH_TTL
    return settings.with_(**changes) if changes else settings


class DemoRefused(ConfigError):
    """The database holds sessions the generator did not create."""


def check_demo_database(store: SessionStore, force: bool = False) -> None:
    """Refuse a database with sessions not created by the demo, unless ``force``."""
    if not force and store.has_foreign_sessions(DEMO_SOURCE):
        raise DemoRefused(
            f"{store.display} holds sessions the demo did not create; refusing to add fake "
            "sessions to it (use another --db, or --force if you really mean it)"
        )


@dataclass
class SimUser:
    """One simulated user and the tokens their browser holds."""

    user_id: str
    email: str
    name: str
    ip: str
    agent: str
    access: str | None = None
    refresh: str | None = None
    session_id: str | None = None


class TrafficGenerator:
    """Drives ``Auth`` with simulated users until stopped."""

    def __init__(
        self,
        auth: Auth,
        *,
        users: int = 40,
        seed: int | None = None,
        on_event: Callable[[str], None] | None = None,
        force: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        own_connection: bool = True,
    ) -> None:
        store = open_store(auth.store.location, clock=clock) if own_connection else auth.store
        check_demo_database(store, force)
        self._own_store = store if own_connection else None
        self.auth = Auth(
            store,
            auth.blacklist,
            auth.codec,
            access_ttl=auth.access_ttl,
            refresh_ttl=auth.refresh_ttl,
            clock=clock,
            touch_interval=auth.touch_interval,
            source=DEMO_SOURCE,
            policy=auth.policy,
            events=auth.events,
        )
        self.clock = clock
        self.rng = random.Random(seed)
        self.on_event = on_event
        self.users = [self._make_user(i) for i in range(max(1, users))]
        self._stop = threading.Event()
        self._queue: list[tuple[float, int]] = []
        now = clock.now()
        for i in range(len(self.users)):
            heapq.heappush(self._queue, (now + self.rng.uniform(0, 3), i))
        self.counts: dict[str, int] = {}
        self.created: set[str] = set()  # ids of the sessions this generator logged in

    def _make_user(self, i: int) -> SimUser:
        first = FIRST[i % len(FIRST)]
        last = LAST[(i // len(FIRST) + i) % len(LAST)]
        n = "" if i < len(FIRST) else str(i // len(FIRST))
        return SimUser(
            user_id=f"u{1000 + i}",
            email=f"{first}.{last}{n}@{DOMAINS[i % len(DOMAINS)]}",
            name=f"{first.title()} {last.title()}",
            ip=self.rng.choice(NETWORKS) + str(self.rng.randint(2, 254)),
            agent=self.rng.choice(AGENTS),
        )

    # -- the loop --------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run in a daemon thread."""
        thread = threading.Thread(target=self.run, name="sessionmon-demo", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Run until ``stop()``; Redis or database trouble is reported and retried."""
        try:
            while not self._stop.is_set():
                due, _ = self._queue[0]
                wait = due - self.clock.now()
                if wait > 0 and self._stop.wait(min(wait, 0.5)):
                    break
                if wait <= 0:
                    self.step()
        finally:
            try:
                self.end_sessions()
            finally:
                if self._own_store is not None:
                    self._own_store.close()

    def end_sessions(self) -> int:
        """Log out the sessions this generator created that are still there (only those: never a
        session another process made, demo or not); returns how many were ended.

        Each is a ``logout`` audited with actor ``demo``. Redis or database trouble ends the
        cleanup (the rows then expire on their own) but is never raised.
        """
        ended = 0
        try:
            ids = sorted(self.created)
            for session in self.auth.store.get_sessions(ids):
                if session.source != DEMO_SOURCE:
                    continue  # not the generator's after all: leave it alone
                out = self.auth.logout(session.id, actor=DEMO_ACTOR, reason="demo stopped")
                ended += len(out.found)
        except (RedisUnavailable, DatabaseError) as exc:
            self._emit("error", None, f"could not end the demo's sessions: {exc}")
        self.created.clear()
        if ended:
            self.counts["ended"] = self.counts.get("ended", 0) + ended
            self._emit("stopped", None, f"ended the demo's {ended} sessions")
        return ended

    def step(self) -> None:
        """Act for the user whose turn it is, and schedule their next turn."""
        due, i = heapq.heappop(self._queue)
        user = self.users[i]
        try:
            delay = self._act(user)
        except RedisUnavailable as exc:
            self._emit("error", user, str(exc))
            delay = 5.0
        except DatabaseError as exc:
            self._emit("error", user, str(exc))
            delay = 5.0
        heapq.heappush(self._queue, (max(due, self.clock.now()) + delay, i))

    def _act(self, user: SimUser) -> float:
        rng, auth = self.rng, self.auth
        access_ttl = auth.access_ttl
        if user.access is None:
            if rng.random() < 0.15:
                return rng.uniform(2, 10)  # not now
            if rng.random() < 0.3:  # a new device or network now and then
                user.ip = rng.choice(NETWORKS) + str(rng.randint(2, 254))
                user.agent = rng.choice(AGENTS)
            session, user.access, user.refresh = auth.login(
                user.user_id, user.email, user.name, ip=user.ip, user_agent=user.agent
            )
            user.session_id = session.id
            self.created.add(session.id)
            self._emit("login", user, f"ip={user.ip}")
            return rng.uniform(1, access_ttl * 0.6)

        result = auth.authenticate(user.access, user.refresh)
        if not result.ok:
            what = "kicked" if result.reason is Reason.REVOKED else "rejected"
            self._emit(what, user, f"reason={result.reason}")
            if user.session_id is not None and result.reason is Reason.REVOKED:
                self.created.discard(user.session_id)  # ended by someone else
            user.access = user.refresh = user.session_id = None
            return rng.uniform(3, 15)
        if result.new_access_token:
            user.access = result.new_access_token
            if result.new_refresh_token:  # rotated: the browser keeps the new cookie
                user.refresh = result.new_refresh_token
            self._emit("refresh", user, "silent refresh: new access token")
        else:
            self._emit("request", user, "GET /api/me 200")

        roll = rng.random()
        if roll < 0.06:
            sid = user.session_id
            assert sid is not None
            out = auth.logout(sid, actor="user", reason="logout", tokens=[])
            self.created.discard(sid)
            self._emit("logout", user, f"{len(out.revoked)} keys blacklisted")
            user.access = user.refresh = user.session_id = None
            return rng.uniform(5, 30)
        if roll < 0.12:
            # Walk away: the access token expires, maybe the refresh token too.
            idle = rng.uniform(access_ttl * 1.2, auth.refresh_ttl * 1.3)
            self._emit("idle", user, f"goes idle for {int(idle)}s")
            return idle
        return rng.uniform(1, access_ttl * 1.4)

    def _emit(self, kind: str, user: SimUser | None, detail: str) -> None:
        if kind != "stopped":
            self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.on_event is None:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock.now()))
        email = user.email if user else "-"
        sid = ((user.session_id if user else None) or "-")[:8]
        self.on_event(f"{stamp}  {kind:<8} {email:<34} sid={sid:<8}  {detail}")
