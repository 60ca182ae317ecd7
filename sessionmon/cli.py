"""The command line: parses, calls the core, maps errors to exit codes.

Exit codes: 0 ok / token valid; 1 token rejected or nothing matched; 2 usage or configuration error
(missing secret, unreadable or corrupt DB); 3 Redis unreachable. Errors are one line on stderr;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sessionmon import __version__
from sessionmon.core.config import Settings, format_duration, load_settings
from sessionmon.core.errors import (
    ConfigError,
    DatabaseError,
    DatabaseMissing,
    RedisUnavailable,
    SessionmonError,
)

if TYPE_CHECKING:
    from sessionmon.core.blacklist import Blacklist
    from sessionmon.core.store import Store

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_REDIS = 0, 1, 2, 3

# Flags shared by every command (and accepted before or after the command name).
SETTING_FLAGS = (
    ("--db", "PATH", "SQLite database (default: $XDG_DATA_HOME/sessionmon/sessions.db)"),
    ("--redis-url", "URL", "redis://, rediss:// or unix:// URL (default: the embedded server)"),
    ("--prefix", "TEXT", "Redis key prefix (default: sessionmon:)"),
    ("--config", "PATH", "TOML config file (default: $XDG_CONFIG_HOME/sessionmon/config.toml)"),
    ("--algorithm", "ALG", "JWT algorithm: HS256 (default), RS256, ES256, EdDSA, ..."),
    ("--access-ttl", "DURATION", "access token life, e.g. 15m (default)"),
    ("--refresh-ttl", "DURATION", "refresh token life, e.g. 7d (default)"),
    ("--leeway", "DURATION", "allowed clock skew (default 10s)"),
    ("--issuer", "TEXT", "iss claim to set and require"),
    ("--audience", "TEXT", "aud claim to set and require"),
    ("--actor", "NAME", "who is acting, for the audit table (default: your user name)"),
)


class CliError(SessionmonError):
    """A usage error found after parsing (exit code 2)."""


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("settings (each also as SESSIONMON_<NAME> env var)")
    for flag, metavar, help_text in SETTING_FLAGS:
        group.add_argument(flag, metavar=metavar, help=help_text)
    group.add_argument(
        "--require-typ",
        dest="require_typ",
        action=argparse.BooleanOptionalAction,
        help="require the typ claim (default: yes; --no-require-typ accepts untyped tokens)",
    )
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="sessionmon",
        parents=[common],
        description="Watch and control JWT login sessions (SQLite sessions, Redis blacklist). "
        "With no command, opens the monitor.",
        epilog="Secrets come from SESSIONMON_SECRET / SESSIONMON_SECRET_FILE (HMAC) or "
        "SESSIONMON_PRIVATE_KEY_FILE / SESSIONMON_PUBLIC_KEY_FILE, never from the command line.",
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

    bl = sub.add_parser("blacklist", parents=[common], help="list blacklist keys by expiry")
    bl.add_argument("--json", action="store_true", help="print a JSON array")
    bl.add_argument("--limit", type=int, default=200, help="at most N keys (default 200)")
    bl.add_argument(
        "--scan", action="store_true", help="also SCAN for keys written without the index"
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
    return parser


def _monitor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="run the traffic generator alongside")
    p.add_argument(
        "--read-only",
        dest="read_only",
        action="store_true",
        default=None,
        help="refuse destructive actions",
    )
    p.add_argument(
        "--interval",
        metavar="DURATION",
        default=None,
        help="poll interval (default 1s, floor 0.2s)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --demo: add demo sessions even to a database that holds real (non-demo) "
        "sessions (refused otherwise)",
    )


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in (
            "db",
            "redis_url",
            "prefix",
            "config",
            "algorithm",
            "access_ttl",
            "refresh_ttl",
            "leeway",
            "issuer",
            "audience",
            "actor",
            "require_typ",
            "interval",
            "read_only",
        )
    }
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


def _open_store(settings: Settings) -> Store:
    from sessionmon.core.store import Store

    return Store(settings.db, create=False)


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
    if args.json:
        _json([{**s.to_dict(), "state": s.state(now)} for s in sessions])
    elif sessions:
        _table(
            ("SESSION", "EMAIL", "NAME", "IP", "ACCESS", "REFRESH", "STATE", "LAST SEEN"),
            [
                (
                    s.id,
                    _short(s.email, 32),
                    _short(s.name, 20),
                    s.ip or "-",
                    countdown(s.access_exp, now),
                    countdown(s.refresh_exp, now),
                    s.state(now),
                    format_duration(now - s.last_seen_at) + " ago",
                )
                for s in sessions
            ],
        )
    else:
        sys.stderr.write("no sessions match\n" if (args.user or args.all) else "no live sessions\n")
    return EXIT_OK if sessions else EXIT_NO_MATCH


def cmd_logout(args: argparse.Namespace, settings: Settings) -> int:
    from sessionmon.core.runtime import open_runtime

    if bool(args.session_ids) == bool(args.user):
        raise CliError("give SESSION_ID... or --user EMAIL (one of the two)")
    with open_runtime(settings, create_db=False) as rt:
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
        for sid in result.found:
            _out(f"deleted  session {sid}" if result.ok else f"NOT deleted  session {sid}")
        for missing in result.missing:
            sys.stderr.write(f"not found: {missing}\n")
    if result.error:
        sys.stderr.write(f"sessionmon: {result.error}\n")
        return EXIT_USAGE
    return EXIT_OK if result.found else EXIT_NO_MATCH


@contextlib.contextmanager
def _blacklist(settings: Settings) -> Iterator[Blacklist]:
    """A Blacklist on the configured Redis (the embedded one needs its database to exist)."""
    from sessionmon.core.blacklist import Blacklist, connect
    from sessionmon.core.runtime import redis_url_for

    if settings.embedded and not settings.db.exists():
        # The embedded Redis lives beside the database: no database, no blacklist.
        raise DatabaseMissing(
            f"database not found: {settings.db} (the embedded Redis lives beside it)"
        )
    url, embedded = redis_url_for(settings)
    client = connect(url)
    try:
        yield Blacklist(client, prefix=settings.prefix, leeway=settings.leeway)
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


def _blacklisted(settings: Settings, jti: str, sid: str) -> bool:
    with _blacklist(settings) as bl:
        return bl.is_revoked(jti, sid)


def cmd_blacklist(args: argparse.Namespace, settings: Settings) -> int:
    import time

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


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    import jwt

    from sessionmon.core.tokens import ACCESS, REFRESH, Reason, TokenRejected

    if sys.stdin.isatty():
        sys.stderr.write("paste one token, then press Ctrl-D\n")
    token = sys.stdin.read().strip()
    typ = REFRESH if args.refresh else ACCESS
    from sessionmon.core.config import load_keys
    from sessionmon.core.tokens import TokenCodec

    # Keys first (a missing secret is the first thing to fix); the database only when needed:
    # an access token is checked against Redis alone.
    codec = TokenCodec(
        load_keys(settings),
        leeway=settings.leeway,
        issuer=settings.issuer,
        audience=settings.audience,
        require_typ=settings.require_typ,
    )
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

    from sessionmon.core.config import parse_duration

    older = parse_duration(args.older_than)
    store = _open_store(settings)
    try:
        before = time.time() - older
        if args.dry_run:
            count = store.count_sessions(include_expired=True) - store.count_sessions(now=before)
            if args.json:
                _json({"would_delete": count})
            else:
                _out(f"would delete {count} expired session{'s' if count != 1 else ''}")
            return EXIT_OK
        deleted = store.purge_expired(before)
        if deleted:
            cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(before))
            store.write_audit(
                [
                    {
                        "at": time.time(),
                        "actor": settings.actor,
                        "action": "purge",
                        "reason": f"refresh expired before {cutoff}",
                        "outcome": f"ok: {deleted} deleted",
                    }
                ]
            )
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
        _table(
            ("WHEN", "ACTOR", "ACTION", "SESSION", "EMAIL", "REASON", "KEYS", "OUTCOME"),
            [
                (
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at)),
                    r.actor,
                    r.action,
                    r.session_id or "-",
                    _short(r.email, 28),
                    _short(r.reason, 24),
                    str(len(r.revoked)),
                    _short(r.outcome, 40),
                )
                for r in rows
            ],
        )
    elif args.session or args.user:
        sys.stderr.write("no audit rows match\n")
    else:
        sys.stderr.write("the audit log is empty\n")
    return EXIT_OK if rows else EXIT_NO_MATCH


COMMANDS: dict[str | None, Callable[[argparse.Namespace, Settings], int]] = {
    None: cmd_tui,
    "tui": cmd_tui,
    "demo": cmd_demo,
    "ls": cmd_ls,
    "logout": cmd_logout,
    "blacklist": cmd_blacklist,
    "check": cmd_check,
    "audit": cmd_audit,
    "purge": cmd_purge,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SESSIONMON_DEBUG") == "1"
    try:
        settings = settings_from_args(args)
        return COMMANDS[args.command](args, settings)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # e.g. `sessionmon ls | head`: not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except RedisUnavailable as exc:
        return _fail(exc, EXIT_REDIS, debug)
    except (ConfigError, DatabaseError, CliError) as exc:
        return _fail(exc, EXIT_USAGE, debug)
    except SessionmonError as exc:
        return _fail(exc, EXIT_USAGE, debug)
    except Exception as exc:  # a bug: still one line, unless --debug
        return _fail(exc, EXIT_NO_MATCH, debug, prefix="internal error: ")


def _fail(exc: BaseException, code: int, debug: bool, prefix: str = "") -> int:
    if debug:
        traceback.print_exception(exc)
    msg = str(exc) or type(exc).__name__
    sys.stderr.write(f"sessionmon: {prefix}{msg}\n")
    if not debug and prefix:
        sys.stderr.write("(run with --debug for the traceback)\n")
    return code


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
