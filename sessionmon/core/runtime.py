"""The one place settings become live objects: store, Redis client (embedded or by URL),
blacklist, token codec, auth. The CLI, the monitor, the web code and the demo all get theirs here
(``open_runtime``, or ``make_blacklist`` / ``make_codec`` where they own the client or the keys'
lifetime themselves)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from sessionmon.core.auth import Auth
from sessionmon.core.blacklist import Blacklist
from sessionmon.core.clock import SYSTEM_CLOCK, Clock
from sessionmon.core.embedded import EmbeddedRedis
from sessionmon.core.embedded_keeper import EmbeddedKeeper, Reviver
from sessionmon.core.event_stream import StreamWriter
from sessionmon.core.events import EventSink, NullSink
from sessionmon.core.keysource import KeySource, open_keys
from sessionmon.core.last_seen import DeferredTouches
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.redis_client import connect
from sessionmon.core.redis_health import WriteGuard
from sessionmon.core.settings import Settings
from sessionmon.core.store import SessionStore, open_store
from sessionmon.core.tokens import TokenCodec


def make_guard(settings: Settings, client: redis.Redis, *, web: bool = False) -> WriteGuard:
    """The checks around revocations: eviction policy first, replicas after (``WAIT`` for up
    to half the Redis timeout, so its answer comes before the socket gives up)."""
    return WriteGuard(
        client,
        allow_evicting=settings.allow_evicting_redis,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout=settings.redis_timeout_for(web=web) / 2,
    )


def make_blacklist(
    settings: Settings,
    client: redis.Redis,
    clock: Clock = SYSTEM_CLOCK,
    *,
    web: bool = False,
    on_unavailable: Callable[[], None] | None = None,
) -> Blacklist:
    """The blacklist of ``settings`` (prefix, leeway, the write guard) on ``client``."""
    blacklist = Blacklist(
        client,
        prefix=settings.prefix,
        leeway=settings.leeway,
        clock=clock,
        guard=make_guard(settings, client, web=web),
    )
    blacklist.on_unavailable = on_unavailable
    return blacklist


def connect_for(settings: Settings, url: str, *, web: bool = False) -> Any:
    """A client for ``url`` with the timeout and TLS files of ``settings`` (``web``: the web
    path's default timeout). The embedded server (a unix socket) never takes the TLS files."""
    tls = settings.redis_tls if settings.redis_url else None
    return connect(url, timeout=settings.redis_timeout_for(web=web), tls=tls)


def make_codec(
    settings: Settings,
    clock: Clock = SYSTEM_CLOCK,
    *,
    may_generate: bool = True,
    keys: KeySource | None = None,
) -> TokenCodec:
    """The token codec of ``settings``; loads the key set now unless given (a missing key is a
    ``ConfigError``; ``may_generate=False``: never generate a key set beside a database that does
    not exist)."""
    return TokenCodec(
        keys if keys is not None else open_keys(settings, may_generate=may_generate),
        leeway=settings.leeway,
        issuer=settings.issuer,
        audience=settings.audience,
        require_typ=settings.require_typ,
        clock=clock,
    )


def make_events(settings: Settings, client: redis.Redis) -> EventSink:
    """The activity feed's writer on ``client`` (``--no-events``: none). Close it with
    ``close_events`` so what is queued is written."""
    if not settings.events:
        return NullSink()
    return StreamWriter(client, settings.prefix, maxlen=settings.events_maxlen)


def close_events(sink: EventSink, timeout: float = 2.0) -> None:
    """Write what the sink has queued (up to ``timeout``), then stop its thread."""
    if isinstance(sink, StreamWriter):
        sink.close(timeout)


def redis_url_for(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The URL to use, starting (or joining) the embedded server when none is configured."""
    if settings.redis_url:
        return settings.redis_url, None
    embedded = EmbeddedRedis(settings.db.anchor)
    return embedded.start(), embedded


@dataclass
class Runtime:
    """The core objects for one process. ``close()`` releases the embedded server."""

    settings: Settings
    store: SessionStore
    client: redis.Redis
    blacklist: Blacklist
    redis_url: str
    embedded: EmbeddedRedis | None = None
    clock: Clock = SYSTEM_CLOCK
    keeper: EmbeddedKeeper | None = None  # restarts the embedded server when it died
    _keys: KeySource | None = field(default=None, repr=False)
    _codec: TokenCodec | None = field(default=None, repr=False)
    _auth: Auth | None = field(default=None, repr=False)
    auth_options: dict[str, Any] = field(default_factory=dict)
    # The web path: last-seen updates noted by requests, written in the background.
    defer_touches: bool = False
    _touches: DeferredTouches | None = field(default=None, repr=False)
    # The activity feed every emitter of this process writes to (``make_events``).
    events: EventSink = field(default_factory=NullSink)

    @property
    def keys(self) -> KeySource:
        """The key set (generated on first use when none is configured; a ``ConfigError`` when
        it cannot be)."""
        if self._keys is None:
            self._keys = open_keys(self.settings)
        return self._keys

    @property
    def codec(self) -> TokenCodec:
        """The token codec; loads keys on first use (a missing key is a ``ConfigError``)."""
        if self._codec is None:
            self._codec = make_codec(self.settings, self.clock, keys=self.keys)
        return self._codec

    @property
    def auth(self) -> Auth:
        if self._auth is None:
            options = {
                "policy": SessionPolicy.from_settings(self.settings),
                "events": self.events,
                **self.auth_options,
            }
            if self.defer_touches and "touches" not in options:
                self._touches = options["touches"] = DeferredTouches(self.store)
            self._auth = Auth(
                self.store,
                self.blacklist,
                lambda: self.codec,
                access_ttl=self.settings.access_ttl,
                refresh_ttl=self.settings.refresh_ttl,
                clock=self.clock,
                **options,
            )
        return self._auth

    def close(self) -> None:
        if self._touches is not None:  # the noted last-seen times, before the store closes
            self._touches.close()
        close_events(self.events)  # what was emitted is written before the client goes
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.store.close()
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()
        elif self.embedded is not None:
            with contextlib.suppress(Exception):
                self.embedded.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_runtime(
    settings: Settings,
    *,
    create_db: bool = True,
    clock: Clock = SYSTEM_CLOCK,
    web: bool = False,
    **auth_options: Any,
) -> Runtime:
    """Open the store and connect Redis (lazily: an unreachable Redis is reported on first use).

    ``web``: the web path (Redis timeout 1 s unless set; last-seen updates written in the
    background, see :mod:`sessionmon.core.last_seen`). An embedded server that dies later is
    restarted in the background by the first command that finds it gone.
    """
    store = open_store(settings.db, create=create_db, clock=clock)
    store.history_retention = settings.history_retention
    keeper = None
    try:
        if settings.redis_url:
            url, embedded = settings.redis_url, None
        else:
            embedded = EmbeddedRedis(settings.db.anchor)
            keeper = EmbeddedKeeper(embedded)
            keeper.start()
            url = keeper.url
    except BaseException:
        store.close()
        raise
    try:
        client = connect_for(settings, url, web=web)
    except BaseException:  # a Redis Cluster's seeds are read now
        store.close()
        if keeper is not None:
            keeper.close()
        raise
    reviver = Reviver(keeper) if keeper is not None else None
    blacklist = make_blacklist(
        settings, client, clock, web=web, on_unavailable=reviver.poke if reviver else None
    )
    return Runtime(
        settings=settings,
        store=store,
        client=client,
        blacklist=blacklist,
        redis_url=url,
        embedded=embedded,
        clock=clock,
        keeper=keeper,
        auth_options=auth_options,
        events=make_events(settings, client),
        defer_touches=web,
    )
