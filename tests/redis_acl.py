"""The ACL user the README tells operators to create, on a test's own redis-server."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from tests.redis_server import RedisProcess

# Exactly the README's "ACL users" command after the password (with the key prefix in place of
# "sessionmon:"): what sessionmon sends, nothing more.
SESSIONMON_RULES = (
    "resetkeys ~{prefix}* resetchannels -@all "
    "+ping +info +exists +get +mget +ttl +pttl +set +del "
    "+zadd +zrem +zcard +zrange +zrevrange +zrangebyscore +zrevrangebyscore +zremrangebyscore "
    "+scan +eval +multi +exec +wait +xadd +xrange +xrevrange +xread "
    "+hello +client|setname +client|tracking"
)
# What a Redis Cluster adds (the README's cluster line): redis-py's RedisCluster reads the layout
# (CLUSTER SLOTS) and the command table (COMMAND) when it connects and again after a MOVED, and
# sends ASKING before a command redirected during a slot migration (ASK).
CLUSTER_RULES = "+cluster|slots +command +asking"
SESSIONMON_CLUSTER_RULES = f"{SESSIONMON_RULES} {CLUSTER_RULES}"
# The one refusal sessionmon causes (and expects): the write guard asks CONFIG GET first, once
# per process, and reads INFO when it is refused (granting CONFIG GET would show the server's
# passwords to this user).
CONFIG_REFUSED = "command: config|get (sessionmon) x1"
# What the test files themselves read to check sessionmon's work (not sessionmon's needs).
TEST_INSPECTION = "+zscore +xlen"


@dataclass(frozen=True)
class AclUser:
    """A user created with ``rules`` over an admin connection (the password never on argv)."""

    proc: RedisProcess
    name: str
    password: str

    @property
    def url(self) -> str:
        return f"redis://{self.name}:{self.password}@127.0.0.1:{self.proc.port}/0"


def add_user(proc: RedisProcess, name: str, rules: str) -> AclUser:
    password = secrets.token_hex(16)
    admin = proc.client()
    try:
        admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules.split())
    finally:
        admin.close()
    return AclUser(proc, name, password)


def add_cluster_user(nodes: Sequence[RedisProcess], name: str, rules: str) -> str:
    """The user on every node of a cluster (ACL is per node), their ``ACL LOG`` emptied; the
    ``redis+cluster://`` URL (``?tls=1`` when the nodes speak TLS) as that user."""
    password = secrets.token_hex(16)
    for node in nodes:
        admin = node.client()
        try:
            admin.execute_command(
                "ACL", "SETUSER", name, "reset", "on", f">{password}", *rules.split()
            )
            admin.execute_command("ACL", "LOG", "RESET")
        finally:
            admin.close()
    seeds = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    tls = "?tls=1" if nodes[0].tls else ""
    return f"redis+cluster://{quote(name)}:{password}@{seeds}{tls}"


def denials(proc: RedisProcess) -> list[str]:
    """What the server's ACL LOG recorded as refused: ``"command: object (user) xN"`` per entry
    (N: how many times)."""
    admin = proc.client()
    try:
        entries = admin.execute_command("ACL", "LOG", "128")
    finally:
        admin.close()
    out = []
    for entry in entries:
        fields = (
            dict(zip(entry[::2], entry[1::2], strict=True)) if isinstance(entry, list) else entry
        )
        fields = {_text(k): _text(v) for k, v in fields.items()}
        out.append(
            f"{fields.get('reason')}: {fields.get('object')} ({fields.get('username')}) "
            f"x{fields.get('count')}"
        )
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
