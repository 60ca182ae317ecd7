"""What the monitor acts through: the store, the blacklist and auth, opened late and reopened.

The monitor opens even when the database is missing, corrupt or locked and when the embedded Redis
does not start: ``MonitorBackend`` opens the read-write store on first use (from a worker
thread, never the UI thread) and tries again on every later use until it works; ``EmbeddedKeeper``
(from the core, shared with the CLI and the web app) (re)starts the embedded Redis on request and
releases it exactly once when the monitor leaves, so the last sessionmon process to leave shuts
the server down.
"""

from __future__ import annotations

import contextlib
import threading

import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.bulk_logout import jobs_dir_for
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.doctor import Probe, Report, run_checks
from sessionmon.core.embedded_keeper import EmbeddedKeeper
from sessionmon.core.event_stream import StreamReader
from sessionmon.core.keyadmin import KeyListing
from sessionmon.core.keyring import overlap_for
from sessionmon.core.runtime import Runtime, close_events, make_events
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore, open_store
from sessionmon.core.store.history import EndedSession, HistoryQuery
from sessionmon.core.store.url import DatabaseUrl


class MonitorBackend:
    """The store (opened on first use), the blacklist and auth for one monitor.

    Build it from live objects (``store`` and ``auth`` given: tests, screenshots) or from
    ``settings`` (the store is opened on demand, with ``create_db`` deciding whether a missing
    file is created). ``close`` releases only what the backend opened itself.
    """

    def __init__(
        self,
        db: DatabaseUrl,
        blacklist: Blacklist,
        *,
        settings: Settings | None = None,
        clock: Clock = SYSTEM_CLOCK,
        store: SessionStore | None = None,
        auth: Auth | None = None,
        create_db: bool = False,
        client: redis.Redis | None = None,
        keeper: EmbeddedKeeper | None = None,
    ) -> None:
        if store is None and settings is None:
            raise ValueError("give either a store or the settings to open one")
        self.db = db
        self.blacklist = blacklist
        self.settings = settings
        self.clock = clock
        self.create_db = create_db
        self.keeper = keeper
        self.redis_start_error: str | None = None  # why the embedded Redis did not start
        self._client = client  # closed by ``close`` (None when the caller owns it)
        self._store = store
        self._auth = auth
        self._owns_store = store is None
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, store: SessionStore, blacklist: Blacklist, auth: Auth) -> MonitorBackend:
        """A backend over objects the caller opened (and closes)."""
        return cls(store.location, blacklist, store=store, auth=auth)

    def store(self) -> SessionStore:
        """The read-write store, opened now if it is not yet; raises ``DatabaseError``.

        Call it from a worker thread: opening a file can wait on locks.
        """
        with self._lock:
            if self._store is None:
                self._store = open_store(self.db, create=self.create_db, clock=self.clock)
                if self.settings is not None:
                    self._store.history_retention = self.settings.history_retention
            return self._store

    def auth(self) -> Auth:
        """Auth over the store (opened now if needed; raises ``DatabaseError``)."""
        store = self.store()
        with self._lock:
            if self._auth is None:
                assert self.settings is not None
                self._runtime = Runtime(
                    settings=self.settings,
                    store=store,
                    client=self.blacklist.client,
                    blacklist=self.blacklist,
                    redis_url="",
                    clock=self.clock,
                    events=make_events(self.settings, self.blacklist.client),
                )
                self._auth = self._runtime.auth
            return self._auth

    def event_reader(self) -> tuple[StreamReader, int]:
        """The activity feed's reader on the monitor's Redis, and how long one blocking read may
        wait (under the client's timeout, so a quiet feed never looks like an outage)."""
        client = self.blacklist.client
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        block_ms = 1000 if not timeout else max(50, min(1000, int(timeout * 500)))
        return StreamReader(client, self.blacklist.prefix), block_ms

    def key_listing(self) -> KeyListing:
        """The signing key set as of now, through auth's codec (generated on first use when
        none is configured). Call it from a worker: it may read files and open the store."""
        auth = self.auth()
        codec = auth.codec
        return KeyListing(
            codec.key_source.refresh(),
            overlap_for(auth.access_ttl, auth.refresh_ttl, codec.leeway),
            self.clock.now(),
        )

    def health(self, clock: Clock | None = None) -> Report:
        """``doctor``'s checks as of now (the health view). Call it from a worker: it scans the
        blacklist and queries the database; raises ``DatabaseError`` when the store cannot be
        opened (Redis problems are findings of the report)."""
        settings = self.settings
        probe = Probe(
            self.store(),
            self.blacklist,
            clock=clock or self.clock,
            allow_evicting=settings.allow_evicting_redis if settings is not None else False,
            jobs=jobs_dir_for(settings.db) if settings is not None else None,
        )
        return run_checks(probe)

    def history(self, query: HistoryQuery) -> list[EndedSession]:
        """Ended sessions matching ``query`` (the history screen; call it from a worker)."""
        return self.store().ended_sessions(query)

    def close(self) -> None:
        """Close what this backend opened and leave the embedded Redis."""
        with self._lock:
            store, self._store = self._store, None
            runtime = self._runtime
        if runtime is not None:
            close_events(runtime.events)  # the monitor's own events are written first
        if self._owns_store and store is not None:
            with contextlib.suppress(Exception):
                store.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()
