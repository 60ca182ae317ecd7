"""Which live sessions an operator means: filters that compose (all must hold), parsed from what
people type, and matched the same way for a dry run and for the revocation that follows."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sessionmon.core.durations import format_duration, parse_duration
from sessionmon.core.errors import ConfigError
from sessionmon.core.store import SEARCH_COLUMNS, Session, SessionStore

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCAN_BATCH = 5000


def parse_cidr(text: str) -> IpNetwork:
    """``10.0.0.0/8``, ``2001:db8::/32`` or one address (a /32 or /128)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"not an IP address or CIDR range: {text!r}") from None


def parse_time(text: str, now: float) -> float:
    """An instant: ISO 8601 (``2026-11-30``, ``2026-11-30T08:00``, ``...Z`` or ``+01:00``; no
    offset means local time) or a duration meaning that long ago (``2h``, ``7d``)."""
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ConfigError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"not a time: {text!r} (use e.g. 2026-11-30T08:00, 2026-11-30T08:00Z or 2h for "
            "two hours ago)"
        ) from None
    return when.timestamp()


@dataclass(frozen=True)
class SessionQuery:
    """Live sessions matching every filter given (``None``: no filter on that field)."""

    user: str | None = None  # user id or email, exactly (an email case-insensitively)
    text: str | None = None  # the monitor's filter: in the email, name, session id or IP
    ip: IpNetwork | None = None
    user_agent: str | None = None  # a substring, case-insensitive
    issued_before: float | None = None  # logged in before this instant
    idle_for: float | None = None  # no request for at least this long
    kid: str | None = None  # its live access or refresh token was signed with this key

    @property
    def empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.user,
                self.text,
                self.ip,
                self.user_agent,
                self.issued_before,
                self.idle_for,
                self.kid,
            )
        )

    def describe(self) -> str:
        """The filters in words, for confirmations, progress lines and the audit reason."""
        parts = []
        if self.user is not None:
            parts.append(f"user {self.user}")
        if self.text is not None:
            parts.append(f"matching {self.text!r}")
        if self.ip is not None:
            parts.append(f"ip in {self.ip}")
        if self.user_agent is not None:
            parts.append(f"user agent contains {self.user_agent!r}")
        if self.issued_before is not None:
            stamp = datetime.fromtimestamp(self.issued_before).isoformat(timespec="seconds")
            parts.append(f"logged in before {stamp}")
        if self.idle_for is not None:
            parts.append(f"idle for {format_duration(self.idle_for)}")
        if self.kid is not None:
            parts.append(f"signed with key {self.kid}")
        return ", ".join(parts) or "every live session"

    def matches(self, s: Session, now: float) -> bool:
        if s.refresh_exp is None or s.refresh_exp <= now:
            return False  # ended already: nothing of it is usable
        if self.user is not None and not _same_user(s, self.user):
            return False
        if self.text is not None and not _contains(s, self.text):
            return False
        if self.ip is not None and not _in_network(s.ip, self.ip):
            return False
        if self.user_agent is not None and (
            s.user_agent is None or self.user_agent.casefold() not in s.user_agent.casefold()
        ):
            return False
        if self.issued_before is not None and not s.created_at < self.issued_before:
            return False
        if self.kid is not None and not s.signed_with(self.kid):
            return False
        return self.idle_for is None or s.last_seen_at <= now - self.idle_for


def matching_sessions(
    store: SessionStore, query: SessionQuery, now: float, batch: int = SCAN_BATCH
) -> Iterator[Session]:
    """Every session ``query`` matches, by id (the store read in keyset batches)."""
    after: str | None = None
    while rows := store.iter_session_batches(after, batch):
        for s in rows:
            if query.matches(s, now):
                yield s
        after = rows[-1].id


@dataclass(frozen=True)
class DryRun:
    """What a revocation by ``query`` would end now: how many sessions, and the first few."""

    count: int
    sample: tuple[Session, ...]


def dry_run(store: SessionStore, query: SessionQuery, now: float, sample: int = 10) -> DryRun:
    """Count the sessions ``query`` matches (the same scan a revocation plans from), keeping
    the first ``sample``; changes nothing."""
    count = 0
    first: list[Session] = []
    for s in matching_sessions(store, query, now):
        count += 1
        if len(first) < sample:
            first.append(s)
    return DryRun(count, tuple(first))


def _same_user(s: Session, user: str) -> bool:
    # As the store's sessions_for_user: the id, or the email as given or lower-cased.
    return s.user_id == user or (s.email is not None and s.email in (user, user.lower()))


def _contains(s: Session, text: str) -> bool:
    # As the read model's filter: a case-insensitive substring of one of the search columns.
    needle = text.casefold()
    return any(needle in (getattr(s, c) or "").casefold() for c in SEARCH_COLUMNS)


def _in_network(ip: str | None, network: IpNetwork) -> bool:
    if not ip:
        return False
    address = _address(ip)
    return address is not None and address in network


@functools.lru_cache(maxsize=65_536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The parsed address (None when it is not one). Cached: a scan of a million sessions meets
    the same addresses again and again, and parsing is most of the cost of the IP filter."""
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None
