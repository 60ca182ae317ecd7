"""The command line: parses, calls the core, maps errors to exit codes.

Exit codes: 0 ok / token valid; 1 token rejected or nothing matched; 2 usage or configuration error
(missing secret; missing, empty, unreadable or corrupt DB); 3 Redis unreachable, out of memory, or
refused because it may evict revocations; 4 a revocation written but not durable (fewer replicas
than ``--redis-wait-replicas`` acknowledged it). Errors are one
line on stderr (``--debug`` shows the traceback); with ``--json`` also one JSON object with
``error`` on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from sessionmon import __version__
from sessionmon.core.durations import format_duration
from sessionmon.core.errors import (
    ConfigError,
    DatabaseMissing,
    NotDurable,
    RedisUnavailable,
    SessionmonError,
)
from sessionmon.core.events import Event, EventKind, EventSink, NullSink
from sessionmon.core.policy import SessionPolicy
from sessionmon.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from sessionmon.core.blacklist import Blacklist
    from sessionmon.core.bulk_logout import JobState
    from sessionmon.core.session_query import SessionQuery
    from sessionmon.core.store import SessionStore

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_REDIS, EXIT_NOT_DURABLE = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SettingFlag:
    """One settings flag: ``--<name with - for _>``, also ``SESSIONMON_<NAME>`` and ``name`` in
    the config file. ``kind``: ``value`` (takes a value), ``duration`` (a value that may look
    like an option: ``-5m``), ``switch`` (``--read-only``), ``bool`` (``--[no-]require-typ``)."""

    name: str
    help: str
    metavar: str | None = None
    kind: str = "value"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# The one definition of the settings flags: every command takes each of them, before or after
# the command name; settings_from_args reads exactly these.
SETTING_FLAGS = (
    SettingFlag(
        "db",
        "SQLite file, sqlite:///path or postgresql://user@host:port/db "
        "(default: $XDG_DATA_HOME/sessionmon/sessions.db)",
        "DB",
    ),
    SettingFlag(
        "redis_url",
        "redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
        "host:port[,host:port]/service[/db], or redis+cluster://host:port[,host:port][?tls=1] "
        "URL (default: the embedded server)",
        "URL",
    ),
    SettingFlag("prefix", "Redis key prefix (default: sessionmon:)", "TEXT"),
    SettingFlag(
        "config", "TOML config file (default: $XDG_CONFIG_HOME/sessionmon/config.toml)", "PATH"
    ),
    SettingFlag("algorithm", "JWT algorithm: HS256 (default), RS256, ES256, EdDSA, ...", "ALG"),
    SettingFlag(
        "key_dir",
        "directory of the rotating key set (default: <db>.keys beside the database when no key "
        "is configured)",
        "DIR",
    ),
    SettingFlag(
        "allow_weak_secret",
        "accept an HMAC secret shorter than the hash (HS256: 32 bytes)",
        kind="switch",
    ),
    SettingFlag("access_ttl", "access token life, e.g. 15m (default)", "DURATION", "duration"),
    SettingFlag("refresh_ttl", "refresh token life, e.g. 7d (default)", "DURATION", "duration"),
    SettingFlag("leeway", "allowed clock skew (default 10s)", "DURATION", "duration"),
    SettingFlag("issuer", "iss claim to set and require", "TEXT"),
    SettingFlag("audience", "aud claim to set and require", "TEXT"),
    SettingFlag(
        "require_typ",
        "require the typ claim (default: yes; --no-require-typ accepts untyped tokens)",
        kind="bool",
    ),
    SettingFlag("actor", "who is acting, for the audit table (default: your user name)", "NAME"),
    SettingFlag(
        "interval", "monitor poll interval (default 1s, floor 0.2s)", "DURATION", "duration"
    ),
    SettingFlag("read_only", "the monitor refuses destructive actions", kind="switch"),
    SettingFlag(
        "redis_timeout",
        "how long a Redis command may take before Redis counts as unavailable "
        "(default 3s; the web app: 1s)",
        "DURATION",
        "duration",
    ),
    SettingFlag(
        "allow_evicting_redis",
        "revoke even on a Redis whose maxmemory-policy may evict the keys (every revoke "
        "then says so; default: refuse)",
        kind="switch",
    ),
    SettingFlag(
        "redis_wait_replicas",
        "a revoke is done only once N replicas acknowledged it (WAIT; default 0)",
        "N",
    ),
    SettingFlag(
        "redis_ca_file",
        "rediss://, rediss+sentinel://, redis+cluster://?tls=1: CA certificates (PEM) that sign "
        "the servers' certificates (default: the system's)",
        "PATH",
    ),
    SettingFlag("redis_cert_file", "TLS URLs: client certificate (PEM) for mutual TLS", "PATH"),
    SettingFlag("redis_key_file", "TLS URLs: the client certificate's key (PEM file)", "PATH"),
    SettingFlag(
        "rotate_refresh",
        "rotate refresh tokens on every silent refresh, with reuse detection (default: yes)",
        kind="bool",
    ),
    SettingFlag(
        "reuse_grace",
        "how long the token just replaced still gets the same new pair (default 10s; 0: never)",
        "DURATION",
        "duration",
    ),
    SettingFlag(
        "idle_timeout",
        "end a session after this long without a request (default: off)",
        "DURATION",
        "duration",
    ),
    SettingFlag(
        "absolute_timeout",
        "end a session this long after login (default: off)",
        "DURATION",
        "duration",
    ),
    SettingFlag("max_sessions_per_user", "live sessions a user may have (default: no limit)", "N"),
    SettingFlag(
        "on_max_sessions",
        "a login over --max-sessions-per-user: deny (default) or evict-oldest",
        "deny|evict-oldest",
    ),
    SettingFlag(
        "events",
        "append what happens (logins, refreshes, rejections, ...) to the activity feed, a "
        "Redis Stream (default: yes; --no-events turns it off)",
        kind="bool",
    ),
    SettingFlag("events_maxlen", "the feed keeps about this many events (default 100000)", "N"),
    SettingFlag(
        "history_retention",
        "how long ended sessions are kept for sessionmon history (default 30d)",
        "DURATION",
        "duration",
    ),
)
# Flags whose value may start with "-" (a negative duration gets its own one-line error).
DURATION_FLAGS = frozenset(
    [f.flag for f in SETTING_FLAGS if f.kind == "duration"] + ["--older-than"]
)


class CliError(SessionmonError):
    """A usage error (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line naming the command's ``--help``, not argparse's usage block.

    No abbreviations: ``ls --all`` must never be read as a prefix of ``--allow-...`` (a flag that
    lowers a safety check must be typed in full)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("sessionmon").strip()
        where = f"{command}: " if command else ""
        raise CliError(f"{where}{message} (see {self.prog} --help)")


def _common_parser() -> _Parser:
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("settings (each also as SESSIONMON_<NAME> env var)")
    for f in SETTING_FLAGS:
        if f.kind == "bool":
            group.add_argument(f.flag, action=argparse.BooleanOptionalAction, help=f.help)
        elif f.kind == "switch":
            group.add_argument(f.flag, action="store_const", const=True, help=f.help)
        else:
            group.add_argument(f.flag, metavar=f.metavar, help=f.help)
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--older-than -5m`` -> ``--older-than=-5m``: argparse takes ``-5m`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + list(argv[i:])
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in DURATION_FLAGS and len(nxt) > 1 and nxt[0] == "-" and nxt[1].isdigit():
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = _Parser(
        prog="sessionmon",
        parents=[common],
        description="Watch and control JWT login sessions (SQLite sessions, Redis blacklist). "
        "With no command, opens the monitor.",
        epilog="Secrets come from SESSIONMON_SECRET / SESSIONMON_SECRET_FILE (HMAC) or "
        "SESSIONMON_PRIVATE_KEY_FILE / SESSIONMON_PUBLIC_KEY_FILE, never from the command line; "
        "with none of them, a rotating key set in the key directory (see sessionmon keys).",
    )
    parser.add_argument("--version", action="version", version=f"sessionmon {__version__}")
    _monitor_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = sub.add_parser("tui", parents=[common], help="open the monitor (the default)")
    _monitor_flags(tui)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run the traffic generator (simulated users)",
        description="Simulated users log in, make requests, silently refresh and log out, "
        "driving the real core. Uses access 20s / refresh 3m unless set otherwise.",
    )
    demo.add_argument("--users", type=int, default=40, help="simulated users (default 40)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    demo.add_argument("--quiet", action="store_true", help="do not print events")
    demo.add_argument(
        "--force", action="store_true", help="write into a DB that holds non-demo sessions"
    )

    ls = sub.add_parser("ls", parents=[common], help="list live sessions")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.add_argument("--user", metavar="EMAIL", help="only this user's sessions (email or id)")
    ls.add_argument("--all", action="store_true", help="include expired sessions")
    ls.add_argument("--limit", type=int, default=None, help="at most N sessions")

    logout = sub.add_parser(
        "logout", parents=[common], help="force-logout sessions (blacklist, then delete)"
    )
    logout.add_argument("session_ids", nargs="*", metavar="SESSION_ID")
    logout.add_argument("--user", metavar="EMAIL", help="every session of this user (email or id)")
    logout.add_argument("--reason", default=None, help="recorded in the audit table")
    logout.add_argument("--json", action="store_true", help="print the result as JSON")
    where = logout.add_argument_group(
        "revoke by query",
        "--where ends every live session matching all the filters given (--user among them), "
        "in batches; --dry-run first shows how many and a sample",
    )
    where.add_argument("--where", action="store_true", help="select sessions by the filters")
    where.add_argument("--ip", metavar="CIDR", help="client IP in this range (or this address)")
    where.add_argument("--user-agent", metavar="TEXT", help="user agent contains TEXT")
    where.add_argument(
        "--issued-before", metavar="TIME", help="logged in before TIME (ISO 8601, or 2h = ago)"
    )
    where.add_argument("--idle-for", metavar="DURATION", help="no request for at least this")
    where.add_argument(
        "--kid", metavar="KID", help="its live access or refresh token was signed with key KID"
    )
    where.add_argument(
        "--dry-run", action="store_true", help="print the count and a sample, change nothing"
    )
    where.add_argument(
        "--batch",
        type=int,
        default=20_000,  # bulk_logout.DEFAULT_BATCH (imported lazily, like the rest of the core)
        help="sessions per batch: one database transaction (default 20000)",
    )
    where.add_argument("--resume", metavar="JOB", help="finish a revoke-by-query job that stopped")

    events = sub.add_parser(
        "events", parents=[common], help="the activity feed (logins, refreshes, rejections, ...)"
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument(
        "--since", metavar="DURATION|TIME", help="from this long ago (10m) or this time (ISO 8601)"
    )
    events.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="only this kind (repeatable): " + ", ".join(k.value for k in EventKind),
    )
    events.add_argument("--user", metavar="EMAIL", help="only events of this user (email or id)")
    events.add_argument(
        "--limit", type=int, default=50, help="without --since: the last N events (default 50)"
    )

    bl = sub.add_parser("blacklist", parents=[common], help="list blacklist keys by expiry")
    bl.add_argument("--json", action="store_true", help="print a JSON array")
    bl.add_argument("--limit", type=int, default=200, help="at most N keys (default 200)")
    bl.add_argument(
        "--scan", action="store_true", help="also SCAN for keys written without the index"
    )
    bl.add_argument(
        "--check",
        action="store_true",
        help="check the Redis server instead: eviction policy and persistence, one line per "
        "finding (exit 0 nothing wrong, 1 warnings, 3 revocations refused or Redis unreachable)",
    )

    check = sub.add_parser(
        "check",
        parents=[common],
        help="verify one token read from stdin",
        description="Reads one token from stdin; prints 'valid' or the rejection reason, and "
        "the decoded claims (never the signature).",
    )
    check.add_argument("--json", action="store_true", help='print {"valid", "reason", "claims"}')
    check.add_argument("--refresh", action="store_true", help="check it as a refresh token")

    purge = sub.add_parser(
        "purge",
        parents=[common],
        help="delete sessions whose refresh token has expired",
        description="Expired sessions stay in the database (ls --all shows them) until purged. "
        "Their tokens can no longer be used, so nothing is blacklisted.",
    )
    purge.add_argument(
        "--older-than",
        metavar="DURATION",
        default="0s",
        help="only sessions expired at least this long ago (default: all expired)",
    )
    purge.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    purge.add_argument(
        "--json", action="store_true", help='print {"deleted": N} ({"would_delete": N})'
    )

    audit = sub.add_parser("audit", parents=[common], help="show the audit log, newest first")
    audit.add_argument("--json", action="store_true", help="print a JSON array")
    audit.add_argument("--limit", type=int, default=50, help="at most N rows (default 50)")
    audit.add_argument("--session", metavar="SESSION_ID", help="only this session")
    audit.add_argument("--user", metavar="EMAIL", help="only this user")

    history = sub.add_parser(
        "history",
        parents=[common],
        help="sessions that ended (logout, force-logout, expiry, ...), newest first",
        description="Ended sessions are kept for --history-retention (default 30d): who, when, "
        "how, by whom and why, and where from.",
    )
    history.add_argument("--json", action="store_true", help="print a JSON array")
    history.add_argument("--user", metavar="EMAIL|ID", help="only this user (email or id)")
    history.add_argument(
        "--since", metavar="TIME", help="ended at or after TIME (ISO 8601, or 2h = ago)"
    )
    history.add_argument(
        "--until", metavar="TIME", help="ended at or before TIME (ISO 8601, or 2h = ago)"
    )
    history.add_argument(
        "--how",
        metavar="KIND",
        help="only this way of ending: " + ", ".join(h.value for h in _end_hows()),
    )
    history.add_argument("--limit", type=int, default=100, help="at most N rows (default 100)")

    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="check Redis, the blacklist, the clocks and the database: can they be trusted?",
        description="One line per check: ok, warning or problem, the figure behind it and the "
        "fix. Exit 0 all ok, 1 warnings, 2 problems.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument(
        "--repair",
        action="store_true",
        help="first rebuild the blacklist index, set missing or short TTLs and blacklist again "
        "sessions deleted but still usable (audited)",
    )
    doctor.add_argument(
        "--limit", type=int, default=10, help="name at most N items per check (default 10)"
    )

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the database schema (SQLite file or PostgreSQL)",
        description="Applies the forward migrations up to this version's schema and says which "
        "version the database had. Every command also does this on first use; run it explicitly "
        "to upgrade a shared PostgreSQL database before starting new app workers.",
    )
    migrate.add_argument("--json", action="store_true", help='print {"from": N, "to": N}')

    copy = sub.add_parser(
        "copy",
        parents=[common],
        help="copy sessions, audit rows and history from one database to another",
        description="Copies every session (expired ones included), every audit row and every "
        "ended session (the history), in batches, keeping ids; ends with a count check. Stop "
        "the writers of the source first, or run it again with --resume until the counts match.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="DB", help="path or URL")
    copy.add_argument("--to", dest="dest", required=True, metavar="DB", help="path or URL")
    copy.add_argument(
        "--resume", action="store_true", help="continue an interrupted copy into --to"
    )
    copy.add_argument("--batch", type=int, default=5000, help="rows per transaction (5000)")
    copy.add_argument("--json", action="store_true", help="print the counts as JSON")

    _keys_parser(sub, common)
    return parser


def _keys_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys",
        parents=[common],
        help="list, rotate, retire signing keys; export the public JWKS",
        description="The signing key set: next (published, signs after the next rotation), "
        "current (signs), previous (verifies until the longest token it signed has expired: "
        "refresh TTL + leeway), retired (verifies nothing). A configured key (SESSIONMON_SECRET, "
        "key files) is one current key and cannot be rotated.",
    )
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    ls = ksub.add_parser("ls", parents=[common], help="list the keys (kid, state, age, countdown)")
    ls.add_argument("--json", action="store_true", help="print a JSON object")
    rotate = ksub.add_parser(
        "rotate",
        parents=[common],
        help="next becomes current, current becomes previous, a new next is generated",
    )
    rotate.add_argument("--reason", default=None, help="recorded in the audit table")
    rotate.add_argument("--json", action="store_true", help="print the changes as JSON")
    retire = ksub.add_parser(
        "retire",
        parents=[common],
        help="reject every token signed with KID from now on (every process within 1 s)",
    )
    retire.add_argument("kid", metavar="KID")
    retire.add_argument("--reason", default=None, help="recorded in the audit table")
    retire.add_argument("--json", action="store_true", help="print the changes as JSON")
    ksub.add_parser(
        "export-jwks",
        parents=[common],
        help="print the public keys (next, current, previous) as a JWKS; HMAC: exit 2",
    )


def _monitor_flags(p: argparse.ArgumentParser) -> None:
    """The monitor's own flags (not settings: --read-only and --interval are settings flags)."""
    p.add_argument("--demo", action="store_true", help="run the traffic generator alongside")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --demo: add demo sessions even to a database that holds real (non-demo) "
        "sessions (refused otherwise)",
    )


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    flags = {f.name: getattr(args, f.name, None) for f in SETTING_FLAGS}
    return load_settings(flags, env)


# -- output helpers ---------------------------------------------------------------------------


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def countdown(expires_at: float | None, now: float) -> str:
    """``14:32``, ``42s`` or ``expired``."""
    if expires_at is None:
        return "-"
    left = expires_at - now
    return "expired" if left <= 0 else format_duration(left)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    _out("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


# -- commands ---------------------------------------------------------------------------------


def cmd_tui(args: argparse.Namespace, settings: Settings) -> int:
    from sessionmon.tui import run_monitor

    return run_monitor(
        settings,
        demo=bool(getattr(args, "demo", False)),
        force=bool(getattr(args, "force", False)),
    )


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from sessionmon.core.runtime import open_runtime
    from sessionmon.demo import TrafficGenerator, demo_ttls

    settings = demo_ttls(settings)
    if args.users < 1:
        raise CliError("--users must be at least 1")
    signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly on SIGTERM as on Ctrl-C
    with open_runtime(settings) as rt:
        rt.blacklist.ping()
        gen = TrafficGenerator(
            rt.auth,
            users=args.users,
            seed=args.seed,
            force=args.force,
            on_event=None if args.quiet else _flush_out,
        )
        sys.stderr.write(
            f"sessionmon demo: {args.users} users on {settings.db} and Redis "
            f"{settings.redis_display}; access {format_duration(settings.access_ttl)}, "
            f"refresh {format_duration(settings.refresh_ttl)}. Ctrl-C to stop.\n"
        )
        try:
            gen.run()
        except KeyboardInterrupt:
            gen.stop()
        counts = ", ".join(f"{v} {k}" for k, v in sorted(gen.counts.items())) or "nothing"
        sys.stderr.write(f"\nsessionmon demo stopped: {counts}\n")
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _flush_out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _open_store(settings: Settings, *, write: bool = False) -> SessionStore:
    """The store of an existing database: a missing file is never created here; an empty
    (0-byte) file is initialised only by a command that writes, readers refuse it."""
    from sessionmon.core.store import open_store

    store = open_store(settings.db, create=_may_initialise(settings, write))
    store.history_retention = settings.history_retention
    return store


def _may_initialise(settings: Settings, write: bool) -> bool:
    # ``create`` lets Store initialise an empty file; a missing one stays "not found".
    return write and settings.db.exists()


def cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    import time

    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    store = _open_store(settings)
    try:
        now = time.time()
        sessions = store.list_sessions(
            now=now, include_expired=args.all, user=args.user, limit=args.limit
        )
    finally:
        store.close()
    policy = SessionPolicy.from_settings(settings)
    if args.json:
        _json(
            [
                {
                    **s.to_json(),
                    "state": s.state(now),
                    "idle_deadline": policy.idle_deadline(s),
                    "absolute_deadline": policy.absolute_deadline(s),
                }
                for s in sessions
            ]
        )
    elif sessions:
        # The policy columns only when the policy is on (the deadlines follow the settings).
        idle, absolute = policy.idle_timeout is not None, policy.absolute_timeout is not None
        headers = ["SESSION", "EMAIL", "NAME", "IP", "ACCESS", "REFRESH", "GEN"]
        headers += ["IDLE"] * idle + ["ABSOLUTE"] * absolute + ["STATE", "LAST SEEN"]
        rows = []
        for s in sessions:
            row = [
                s.id,
                _short(s.email, 32),
                _short(s.name, 20),
                s.ip or "-",
                countdown(s.access_exp, now),
                countdown(s.refresh_exp, now),
                str(s.generation),
            ]
            row += [countdown(policy.idle_deadline(s), now)] * idle
            row += [countdown(policy.absolute_deadline(s), now)] * absolute
            row += [s.state(now), format_duration(now - s.last_seen_at) + " ago"]
            rows.append(row)
        _table(headers, rows)
    else:
        sys.stderr.write("no sessions match\n" if (args.user or args.all) else "no live sessions\n")
    return EXIT_OK if sessions else EXIT_NO_MATCH


def cmd_logout(args: argparse.Namespace, settings: Settings) -> int:
    from sessionmon.core.auth import LogoutOutcome
    from sessionmon.core.runtime import open_runtime

    if args.where or args.resume:
        return _logout_where(args, settings)
    query_only = [f for f in QUERY_ONLY_FILTERS if getattr(args, f)]
    if query_only or args.dry_run:
        flag = "--" + (query_only[0].replace("_", "-") if query_only else "dry-run")
        raise CliError(f"{flag} selects sessions by query: add --where")
    if bool(args.session_ids) == bool(args.user):
        raise CliError("give SESSION_ID... or --user EMAIL (one of the two)")
    with open_runtime(settings, create_db=_may_initialise(settings, True)) as rt:
        auth = rt.auth
        if args.user:
            result = auth.force_logout_user(args.user, settings.actor, args.reason)
        else:
            result = auth.force_logout_many(args.session_ids, settings.actor, args.reason)
    if args.json:
        _json(result.to_dict())
    else:
        for key, ttl in result.revoked.items():
            _out(f"revoked  {key}  ttl {format_duration(ttl)}")
        for key, ttl in result.not_durable.items():
            _out(f"NOT durable  {key}  ttl {format_duration(ttl)}")
        for sid in result.found:
            _out(f"deleted  session {sid}" if result.ok else f"NOT deleted  session {sid}")
        for missing in result.missing:
            sys.stderr.write(f"not found: {missing}\n")
    if result.warning:
        sys.stderr.write(f"sessionmon: warning: {result.warning}\n")
    if result.error:
        sys.stderr.write(f"sessionmon: {result.error}\n")
        if result.outcome is LogoutOutcome.NOT_DURABLE:
            return EXIT_NOT_DURABLE
        if result.outcome is LogoutOutcome.REDIS_PARTIAL:
            return EXIT_REDIS
        return EXIT_USAGE
    # A partial result (some sessions not found) is not a success: a script must notice.
    return EXIT_OK if result.found and not result.missing else EXIT_NO_MATCH


def _logout_where(args: argparse.Namespace, settings: Settings) -> int:
    """``logout --where``: plan the matched set as a job (or resume one), then end it."""
    from sessionmon.core.bulk_logout import LogoutJob, jobs_dir_for
    from sessionmon.core.runtime import open_runtime

    if args.session_ids:
        raise CliError("--where selects sessions by filters: give no SESSION_ID")
    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    root = jobs_dir_for(settings.db)
    if args.resume:
        if args.where or _query_given(args):
            raise CliError("--resume JOB finishes the job's own query: give no filters")
        job = LogoutJob.load(root, args.resume)
    else:
        query = _session_query(args)
        if args.dry_run:
            return _logout_dry_run(args, settings, query)
    with open_runtime(settings, create_db=False) as rt:
        if not args.resume:
            now = rt.auth.clock.now()
            job = LogoutJob.plan(
                root, rt.store, query, actor=settings.actor, reason=args.reason, now=now
            )
            if job.state.total == 0:
                job.discard()
                sys.stderr.write(f"no live sessions match ({query.describe()})\n")
                return EXIT_NO_MATCH
        st = job.state
        if st.finished:
            sys.stderr.write(f"logout job {st.job} is already complete\n")
        elif not args.json:
            sys.stderr.write(f"job {st.job}: {st.total:,} sessions ({st.query})\n")
        tty = sys.stderr.isatty() and not args.json

        def show(state: JobState) -> None:
            if tty:
                share = 100 * state.done // state.total if state.total else 100
                sys.stderr.write(f"\r{state.done:,}/{state.total:,} ({share}%)   ")
                sys.stderr.flush()

        try:
            report = job.run(rt.auth, batch=args.batch, progress=show)
        except KeyboardInterrupt:
            sys.stderr.write(
                f"\nsessionmon: interrupted after {st.done:,} of {st.total:,}; "
                f"finish with: sessionmon logout --resume {st.job}\n"
            )
            return 130
        if tty:
            sys.stderr.write("\n")
    st = report.state
    if args.json:
        _json(report.to_dict())
    else:
        _out(
            f"ended {st.ended:,} sessions ({st.keys:,} blacklist keys); "
            f"{st.gone:,} had already ended; {st.done:,} of {st.total:,} planned"
        )
    if report.failure is not None:
        sys.stderr.write(
            f"sessionmon: stopped after {st.done:,} of {st.total:,}: {report.failure}; "
            f"finish with: sessionmon logout --resume {st.job}\n"
        )
        return exit_code_for(report.failure)
    return EXIT_OK


# The filters of ``logout --where`` (besides --user, which works without --where too).
QUERY_ONLY_FILTERS = ("ip", "user_agent", "issued_before", "idle_for", "kid")


def _query_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, f) for f in ("user", *QUERY_ONLY_FILTERS))


def _session_query(args: argparse.Namespace) -> SessionQuery:
    """The ``SessionQuery`` of ``logout --where``'s filters (at least one)."""
    import time

    from sessionmon.core.durations import parse_duration
    from sessionmon.core.session_query import SessionQuery, parse_cidr, parse_time

    if not _query_given(args):
        raise CliError(
            "--where needs at least one filter: --user, --ip, --user-agent, --issued-before, "
            "--idle-for, --kid"
        )
    kid = args.kid.strip() if args.kid is not None else None
    if kid is not None and not kid:
        raise CliError("--kid: empty key id")
    try:
        idle = parse_duration(args.idle_for) if args.idle_for else None
    except ConfigError as exc:
        raise CliError(f"--idle-for: {exc}") from None
    try:
        before = parse_time(args.issued_before, time.time()) if args.issued_before else None
    except ConfigError as exc:
        raise CliError(f"--issued-before: {exc}") from None
    try:
        ip = parse_cidr(args.ip) if args.ip else None
    except ConfigError as exc:
        raise CliError(f"--ip: {exc}") from None
    return SessionQuery(
        user=args.user,
        ip=ip,
        user_agent=args.user_agent or None,
        issued_before=before,
        idle_for=idle,
        kid=kid,
    )


DRY_RUN_SAMPLE = 10


def _logout_dry_run(args: argparse.Namespace, settings: Settings, query: SessionQuery) -> int:
    import time

    from sessionmon.core.session_query import dry_run

    store = _open_store(settings)
    try:
        now = time.time()
        found = dry_run(store, query, now, DRY_RUN_SAMPLE)
    finally:
        store.close()
    count, sample = found.count, found.sample
    if args.json:
        _json(
            {
                "dry_run": True,
                "query": query.describe(),
                "would_end": count,
                "sample": [s.to_json() for s in sample],
            }
        )
    else:
        _out(f"would end {count:,} live session{'s' if count != 1 else ''} ({query.describe()})")
        if sample:
            _table(
                ("SESSION", "EMAIL", "IP", "LOGGED IN", "IDLE"),
                [
                    (
                        s.id,
                        _short(s.email, 28),
                        s.ip or "-",
                        time.strftime("%Y-%m-%d %H:%M", time.localtime(s.created_at)),
                        format_duration(now - s.last_seen_at),
                    )
                    for s in sample
                ],
            )
            if count > len(sample):
                _out(f"... and {count - len(sample):,} more")
    return EXIT_OK if count else EXIT_NO_MATCH


@contextlib.contextmanager
def _blacklist(settings: Settings) -> Iterator[Blacklist]:
    """A Blacklist on the configured Redis (the embedded one needs its database to exist)."""
    from sessionmon.core.runtime import connect_for, make_blacklist, redis_url_for

    if settings.embedded and not settings.db.exists():
        # The embedded Redis lives beside the database: no database, no blacklist.
        raise DatabaseMissing(
            f"database not found: {settings.db} (the embedded Redis lives beside it)"
        )
    url, embedded = redis_url_for(settings)
    client = connect_for(settings, url)
    try:
        yield make_blacklist(settings, client)
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


@contextlib.contextmanager
def _event_sink(settings: Settings) -> Iterator[EventSink]:
    """The activity feed for a command that has no Redis of its own (``keys``): best effort, a
    Redis that cannot be reached drops the event, never the command."""
    from sessionmon.core.runtime import close_events, make_events

    if not settings.events:
        yield NullSink()
        return
    try:
        blacklist = _blacklist(settings)
        bl = blacklist.__enter__()
    except SessionmonError:
        yield NullSink()
        return
    sink = make_events(settings, bl.client)
    try:
        yield sink
    finally:
        close_events(sink)
        blacklist.__exit__(None, None, None)


def _blacklisted(settings: Settings, jti: str, sid: str) -> bool:
    with _blacklist(settings) as bl:
        return bl.is_revoked(jti, sid)


FOLLOW_BLOCK_MS = 1000
RECONNECT_PAUSE = 1.0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    """Print the feed (``--since`` or the last ``--limit``), then with ``--follow`` new events as
    they come, resuming after the last id printed when Redis comes back."""
    import time

    from sessionmon.core.event_stream import StreamReader
    from sessionmon.core.session_query import parse_time

    kinds = _event_kinds(args.kind)
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    try:
        since = parse_time(args.since, time.time()) if args.since else None
    except ConfigError as exc:
        raise CliError(f"--since: {exc}") from None
    shown = 0

    def show(batch: Sequence[Event]) -> None:
        nonlocal shown
        for e in batch:
            if _event_matches(e, kinds, args.user):
                shown += 1
                _flush_out(json.dumps(e.to_dict()) if args.json else _event_line(e))

    with _blacklist(settings) as bl:
        reader = StreamReader(bl.client, settings.prefix)
        if since is not None:
            batch = reader.since(since)
            show(batch)
            while len(batch) == 1000:  # more than one page since then
                batch = reader.after(batch[-1].id, count=1000)
                show(batch)
            last = batch[-1].id if batch else reader.last_id()
        else:
            recent = reader.latest(args.limit if not (kinds or args.user) else 10_000)
            if kinds or args.user:
                recent = [e for e in recent if _event_matches(e, kinds, args.user)][-args.limit :]
            show(recent)
            last = recent[-1].id if recent else reader.last_id()
        if not args.follow:
            if not shown:
                sys.stderr.write("no events match\n" if (kinds or args.user) else "no events\n")
            return EXIT_OK if shown else EXIT_NO_MATCH
        down = False
        while True:
            try:
                batch = reader.after(last, block_ms=FOLLOW_BLOCK_MS)
            except RedisUnavailable as exc:
                if not down:
                    sys.stderr.write(f"sessionmon: {exc}; retrying\n")
                    down = True
                time.sleep(RECONNECT_PAUSE)
                continue
            if down:
                sys.stderr.write("sessionmon: Redis is back; following from the last event shown\n")
                down = False
            show(batch)
            if batch:
                last = batch[-1].id


def _event_kinds(values: Sequence[str] | None) -> frozenset[EventKind]:
    kinds = set()
    for value in values or ():
        for name in value.split(","):
            try:
                kinds.add(EventKind(name.strip()))
            except ValueError:
                known = ", ".join(k.value for k in EventKind)
                raise CliError(f"--kind: no such kind {name.strip()!r} (one of {known})") from None
    return frozenset(kinds)


def _event_matches(e: Event, kinds: frozenset[EventKind], user: str | None) -> bool:
    if kinds and e.kind not in kinds:
        return False
    return user is None or user in (e.user_id, e.email) or user.lower() == e.email


def _event_line(e: Event) -> str:
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
    who = e.email or e.user_id or "-"
    parts = [when, e.kind.value.ljust(14), _short(who, 32).ljust(32), e.session_id or "-"]
    if e.count != 1:
        parts.append(f"x{e.count}")
    for label, value in (("reason", e.reason), ("by", e.actor), ("ip", e.ip)):
        if value:
            parts.append(f"{label} {value}")
    return "  ".join(parts)


def cmd_blacklist(args: argparse.Namespace, settings: Settings) -> int:
    import time

    if args.check:
        return _check_redis(args, settings)
    with _blacklist(settings) as bl:
        entries = bl.page(0, args.limit)
        if args.scan:
            seen = {e.key for e in entries}
            cursor = 0
            while True:
                cursor, found = bl.scan(cursor)
                entries += [e for e in found if e.key not in seen]
                seen.update(e.key for e in found)
                if cursor == 0 or len(entries) >= args.limit:
                    break
            entries = sorted(entries, key=lambda e: e.expires_at)[: args.limit]
    now = time.time()
    if args.json:
        _json([{**e.to_dict(), "ttl": round(e.ttl, 3)} for e in entries])
    elif entries:
        _table(
            ("KEY", "KIND", "EMAIL", "SESSION", "REASON", "ACTOR", "TTL"),
            [
                (
                    e.key,
                    e.kind,
                    _short(e.email, 32),
                    e.sid or "-",
                    _short(e.reason, 24),
                    e.actor or "-",
                    countdown(e.expires_at, now),
                )
                for e in entries
            ],
        )
    else:
        sys.stderr.write("the blacklist is empty\n")
    return EXIT_OK if entries else EXIT_NO_MATCH


def _check_redis(args: argparse.Namespace, settings: Settings) -> int:
    """``blacklist --check``: what is wrong with the server for a blacklist, one line each."""
    from sessionmon.core.redis_health import Severity, findings, read_server_settings

    with _blacklist(settings) as bl:
        server = read_server_settings(bl.client)
    found = findings(server, allow_evicting=settings.allow_evicting_redis)
    errors = [f for f in found if f.severity is Severity.ERROR]
    if args.json:
        _json(
            {
                "redis": settings.redis_display,
                "maxmemory": server.maxmemory,
                "maxmemory_policy": server.policy,
                "appendonly": server.aof,
                "save": server.save,
                "source": server.source,
                "findings": [
                    {"severity": f.severity.value, "code": f.code, "message": f.message}
                    for f in found
                ],
            }
        )
    else:
        for f in found:
            _out(str(f))
        if not found:
            _out(
                f"ok: {settings.redis_display}: {server.eviction_text()}, persistence "
                f"{'on' if server.persistent else 'unknown'}"
            )
    if errors:
        return EXIT_REDIS
    return EXIT_NO_MATCH if found else EXIT_OK


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    import jwt

    from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenRejected

    if sys.stdin.isatty():
        sys.stderr.write("paste one token, then press Ctrl-D\n")
    # Bytes, whatever the locale: invalid UTF-8 must be a rejection (malformed), never a crash.
    token = sys.stdin.buffer.read().strip().decode("utf-8", "surrogateescape")
    typ = REFRESH if args.refresh else ACCESS
    from sessionmon.core.runtime import make_codec
    from sessionmon.core.settings import may_create_db
    from sessionmon.core.store import open_store

    if not settings.db.exists() and may_create_db(settings):
        # The default settings on a fresh machine: create the default database (and so a
        # place for the embedded Redis and the generated secret), as the monitor does.
        open_store(settings.db).close()
    # Keys first (a missing secret is the first thing to fix); the database only when needed:
    # an access token is checked against Redis alone. Nothing is created beside a missing one.
    codec = make_codec(settings, may_generate=settings.db.exists())
    reason: str | None = None
    detail = ""
    claims: dict[str, Any] | None = None
    verified = False
    try:
        c = codec.verify(token, typ)
        claims, verified = c.public(), True
        if _blacklisted(settings, c.jti, c.sid):
            reason, detail = Reason.REVOKED.value, "token or session is on the blacklist"
        elif typ == REFRESH:
            store = _open_store(settings)
            try:
                if store.get_session(c.sid) is None:
                    reason, detail = Reason.SESSION_NOT_FOUND.value, "session does not exist"
            finally:
                store.close()
    except TokenRejected as exc:
        reason, detail = exc.reason.value, exc.detail
        if exc.reason is Reason.WRONG_TYPE and typ == ACCESS:
            detail += "; use --refresh to check a refresh token"
        if exc.verified_payload is not None:
            claims, verified = dict(exc.verified_payload), True
        elif exc.reason is not Reason.TOO_LARGE:
            try:
                unverified = jwt.decode(token, options={"verify_signature": False})
                claims = unverified if isinstance(unverified, dict) else None
            except Exception:
                claims = None
    if args.json:
        _json(
            {
                "valid": reason is None,
                "reason": reason,
                "detail": detail or None,
                "signature_verified": verified,
                "claims": claims,
            }
        )
    else:
        _out(
            "valid"
            if reason is None
            else f"rejected: {reason}" + (f" ({detail})" if detail else "")
        )
        if claims is not None:
            _out("claims:" if verified else "claims (UNVERIFIED: the signature did not check out):")
            for k, v in claims.items():
                _out(f"  {k}: {json.dumps(v, default=str)}")
    return EXIT_OK if reason is None else EXIT_NO_MATCH


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from sessionmon.core.durations import parse_duration
    from sessionmon.core.purge import purge_expired

    try:
        older = parse_duration(args.older_than)
    except ConfigError as exc:
        raise CliError(f"--older-than: {exc}") from None
    store = _open_store(settings, write=not args.dry_run)
    try:
        before = time.time() - older
        if args.dry_run:
            count = purge_expired(store, before, settings.actor, dry_run=True)
            if args.json:
                _json({"would_delete": count})
            else:
                _out(f"would delete {count} expired session{'s' if count != 1 else ''}")
            return EXIT_OK
        deleted = purge_expired(store, before, settings.actor)
    finally:
        store.close()
    if args.json:
        _json({"deleted": deleted})
    else:
        _out(f"deleted {deleted} expired session{'s' if deleted != 1 else ''}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    import time

    store = _open_store(settings)
    try:
        rows = store.audit(limit=args.limit, session_id=args.session, user=args.user)
    finally:
        store.close()
    if args.json:
        _json([r.to_dict() for r in rows])
    elif rows:
        # A DETAIL column when a row recorded more (a reuse detection: generations, IPs, UAs).
        detail = any(r.detail for r in rows)
        headers = ["WHEN", "ACTOR", "ACTION", "SESSION", "EMAIL", "REASON", "KEYS", "OUTCOME"]
        _table(
            headers + ["DETAIL"] * detail,
            [
                [
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at)),
                    r.actor,
                    r.action,
                    r.session_id or "-",
                    _short(r.email, 28),
                    _short(r.reason, 24),
                    str(len(r.revoked)),
                    _short(r.outcome, 40),
                ]
                + [_short(r.detail_text(), 120) or "-"] * detail
                for r in rows
            ],
        )
    elif args.session or args.user:
        sys.stderr.write("no audit rows match\n")
    else:
        sys.stderr.write("the audit log is empty\n")
    return EXIT_OK if rows else EXIT_NO_MATCH


def _end_hows() -> list[Any]:
    from sessionmon.core.store.history import EndHow

    return list(EndHow)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from sessionmon.core.session_query import parse_time
    from sessionmon.core.store.history import EndHow, HistoryQuery

    now = time.time()
    try:
        since = None if args.since is None else parse_time(args.since, now)
        until = None if args.until is None else parse_time(args.until, now)
        how = None if args.how is None else EndHow.parse(args.how)
    except ConfigError as exc:
        raise CliError(f"history: {exc}") from None
    if args.limit < 1:
        raise CliError("history: --limit must be at least 1")
    query = HistoryQuery(user=args.user, since=since, until=until, how=how, limit=args.limit)
    store = _open_store(settings)
    try:
        rows = store.ended_sessions(query)
    finally:
        store.close()
    if args.json:
        _json([r.to_dict() for r in rows])
    elif rows:

        def when(t: float) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

        _table(
            ("ENDED", "HOW", "EMAIL", "SESSION", "BY", "REASON", "IP", "STARTED"),
            [
                (
                    when(r.ended_at),
                    r.how.value,
                    _short(r.email or r.user_id, 28),
                    r.session_id,
                    r.actor or "-",
                    _short(r.reason, 24),
                    r.ip or "-",
                    when(r.created_at),
                )
                for r in rows
            ],
        )
    else:
        sys.stderr.write("no ended sessions match\n")
    return EXIT_OK if rows else EXIT_NO_MATCH


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Every check, one block each; with ``--repair`` the repair runs first and is reported."""
    from sessionmon.core.bulk_logout import jobs_dir_for
    from sessionmon.core.doctor import Probe, Status, repair, run_checks

    if args.limit < 1:
        raise CliError("doctor: --limit must be at least 1")
    store = _open_store(settings, write=args.repair)
    try:
        with _blacklist(settings) as bl:

            def probe() -> Probe:
                return Probe(
                    store,
                    bl,
                    leeway=settings.leeway,
                    allow_evicting=settings.allow_evicting_redis,
                    limit=args.limit,
                    jobs=jobs_dir_for(settings.db),
                )

            repaired = None
            if args.repair:
                from sessionmon.core.runtime import close_events, make_events

                events = make_events(settings, bl.client)
                try:
                    repaired = repair(probe(), settings.actor, events)
                finally:
                    close_events(events)
            report = run_checks(probe())
    finally:
        store.close()
    if args.json:
        data = report.to_dict()
        if repaired is not None:
            data["repaired"] = repaired.to_dict()
        _json(data)
        return report.exit_code
    if repaired is not None:
        _out(f"repaired: {repaired.text()}" if repaired.changed else "repaired: nothing to do")
    width = max(len(s.label) for s in Status) + 2
    for c in report.checks:
        _out(f"{c.status.label:<{width}}{c.title}: {c.figure}")
        for item in c.items:
            _out(f"{'':<{width}}  - {item}")
        if c.total > len(c.items):
            _out(f"{'':<{width}}  ... and {c.total - len(c.items)} more")
        if c.status is not Status.OK and c.fix:
            _out(f"{'':<{width}}fix: {c.fix}")
    counts = report.counts()
    _out(
        f"{counts['problem']} problem(s), {counts['warning']} warning(s), {counts['ok']} ok "
        f"({settings.redis_display}, {settings.db.display})"
    )
    return report.exit_code


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sessionmon.core.store import open_store

    store = open_store(settings.db, create=True)
    try:
        before, after = store.migrated_from, store.schema_version()
    finally:
        store.close()
    if args.json:
        _json({"database": settings.db.display, "from": before, "to": after})
    elif before == after:
        _out(f"{settings.db.display}: schema version {after}, up to date")
    else:
        _out(f"{settings.db.display}: schema version {before} -> {after}")
    return EXIT_OK


def cmd_copy(args: argparse.Namespace, settings: Settings) -> int:
    from sessionmon.core.store import DatabaseUrl, open_store
    from sessionmon.core.store.copy import CopyProgress, copy_store

    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    source_url, dest_url = DatabaseUrl.parse(args.source), DatabaseUrl.parse(args.dest)
    if source_url.path is not None and not source_url.path.exists():
        raise DatabaseMissing(f"database not found: {source_url.display}")
    tty = sys.stderr.isatty()

    def show(p: CopyProgress) -> None:
        if tty:
            share = f" ({100 * p.done // p.total}%)" if p.total else ""
            sys.stderr.write(f"\r{p.table}: {p.done:,}/{p.total:,}{share}   ")
            sys.stderr.flush()

    source = open_store(source_url, create=False)
    try:
        dest = open_store(dest_url, create=True)
        try:
            report = copy_store(source, dest, resume=args.resume, batch=args.batch, progress=show)
        finally:
            dest.close()
    finally:
        source.close()
    if tty:
        sys.stderr.write("\n")
    if args.json:
        _json({**dataclasses.asdict(report), "counts_match": report.counts_match})
    else:
        _out(
            f"copied {report.sessions_copied} sessions, {report.audit_copied} audit rows and "
            f"{report.ended_copied} ended sessions from {source_url.display} to "
            f"{dest_url.display}"
        )
        _out(
            f"count check: sessions {report.source_sessions} -> {report.dest_sessions}, "
            f"audit {report.source_audit} -> {report.dest_audit}, "
            f"history {report.source_ended} -> {report.dest_ended}: "
            + ("match" if report.counts_match else "MISMATCH")
        )
    if not report.counts_match:
        sys.stderr.write(
            "sessionmon: the counts differ: the source changed during the copy, or the "
            "destination held other rows (run again with --resume once writers have stopped)\n"
        )
        return EXIT_NO_MATCH
    return EXIT_OK


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from sessionmon.core.keyadmin import KeyAdmin, listing
    from sessionmon.core.keysource import open_keys
    from sessionmon.core.settings import may_create_db
    from sessionmon.core.store import open_store

    if not settings.db.exists() and may_create_db(settings):
        open_store(settings.db).close()  # a first run: as `check` and the monitor do
    keys = open_keys(settings, may_generate=settings.db.exists())
    action = args.keys_command
    if action == "ls":
        view = listing(keys, settings)
        if args.json:
            _json(
                {
                    "algorithm": view.ring.algorithm,
                    "where": view.ring.where,
                    "managed": view.ring.managed,
                    "overlap": view.overlap,
                    "keys": view.to_dicts(),
                }
            )
            return EXIT_OK
        sys.stderr.write(
            f"{view.ring.algorithm} keys in {view.ring.where}; a previous key verifies for "
            f"{format_duration(view.overlap)} (longest token + leeway)\n"
        )
        _table(
            ("KID", "ALG", "STATE", "AGE", "CAN GO"),
            [
                (
                    e.kid,
                    e.algorithm,
                    e.state.value,
                    "-" if (age := e.age(view.now)) is None else format_duration(age),
                    _can_go(e.can_go_at(view.overlap), view.now),
                )
                for e in view.entries
            ],
        )
        return EXIT_OK
    store = _open_store(settings, write=True)
    try:
        with _event_sink(settings) as events:
            admin = KeyAdmin(settings, store, keys=keys, events=events)
            if action == "export-jwks":
                _json(admin.export_jwks(settings.actor))
                return EXIT_OK
            if action == "rotate":
                change = admin.rotate(settings.actor, args.reason)
            else:
                change = admin.retire(args.kid, settings.actor, args.reason)
    finally:
        store.close()
    if args.json:
        _json(
            {
                "action": change.action,
                "algorithm": change.algorithm,
                "kid": change.kid,
                "changes": [{"kid": k, "from": a, "to": b} for k, a, b in change.changes],
                "at": time.time(),
            }
        )
    else:
        for kid, old, new in change.changes:
            _out(f"{kid}  {old} -> {new}")
    return EXIT_OK


def _can_go(at: float | None, now: float) -> str:
    """The countdown of a previous key: ``in 6d 23:59``, or ``now``; ``-`` for other states."""
    if at is None:
        return "-"
    return "now" if at <= now else "in " + format_duration(at - now)


COMMANDS: dict[str | None, Callable[[argparse.Namespace, Settings], int]] = {
    None: cmd_tui,
    "tui": cmd_tui,
    "demo": cmd_demo,
    "ls": cmd_ls,
    "logout": cmd_logout,
    "blacklist": cmd_blacklist,
    "events": cmd_events,
    "check": cmd_check,
    "audit": cmd_audit,
    "migrate": cmd_migrate,
    "copy": cmd_copy,
    "purge": cmd_purge,
    "keys": cmd_keys,
    "history": cmd_history,
    "doctor": cmd_doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    debug = "--debug" in argv or os.environ.get("SESSIONMON_DEBUG") == "1"
    try:
        args, unknown = build_parser().parse_known_args(_join_negative_values(argv))
        if unknown:
            command = f"sessionmon {args.command}" if args.command else "sessionmon"
            raise CliError(
                f"{args.command + ': ' if args.command else ''}unrecognized arguments: "
                f"{' '.join(unknown)} (see {command} --help)"
            )
        settings = settings_from_args(args)
        return COMMANDS[args.command](args, settings)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # e.g. `sessionmon ls | head`: not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        # ``--json`` as parsed, or as typed when parsing itself failed.
        as_json = bool(getattr(args, "json", False)) if args is not None else "--json" in argv
        return _fail(exc, debug=debug, as_json=as_json)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a failure: 3 Redis unreachable, 2 usage or configuration (a missing,
    empty or corrupt database too), 1 for a bug (reported as an internal error)."""
    if isinstance(exc, RedisUnavailable):
        return EXIT_REDIS
    if isinstance(exc, NotDurable):
        return EXIT_NOT_DURABLE
    if isinstance(exc, SessionmonError):  # ConfigError, DatabaseError, CliError, ...
        return EXIT_USAGE
    return EXIT_NO_MATCH


def _fail(exc: BaseException, *, debug: bool, as_json: bool) -> int:
    """One line on stderr (the traceback with ``--debug``); with ``--json`` also one JSON object
    on stdout with ``error`` (``logout``: its whole result)."""
    from sessionmon.core.auth import LogoutFailed

    code = exit_code_for(exc)
    internal = not isinstance(exc, SessionmonError)
    if debug:
        traceback.print_exception(exc)
    msg = ("internal error: " if internal else "") + (str(exc) or type(exc).__name__)
    msg = " ".join(msg.split())  # one line, whatever the exception said
    if as_json:
        base = exc.result.to_dict() if isinstance(exc, LogoutFailed) else {}
        with contextlib.suppress(BrokenPipeError):
            _json({**base, "error": msg})
            sys.stdout.flush()
    sys.stderr.write(f"sessionmon: {msg}\n")
    if not debug and internal:
        sys.stderr.write("(run with --debug for the traceback)\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
