"""Commands to several Redis Cluster masters at once, one pipeline per node.

Each node's commands go in one non-transactional pipeline on one of that node's connections:
written to every node first, then every node's replies read, so the nodes execute them in
parallel and the whole batch costs about one round trip (plus the slowest node's work). A node's
commands share one connection, so a ``WAIT`` queued after them waits for exactly them.

Nothing here follows a redirection (``MOVED``, ``ASK``, ``TRYAGAIN``) or retries: a reply that is
an error is handed back as the exception, in its command's place, and a node that could not be
reached or stopped answering is reported as such with the replies read before that. The caller
decides what each outcome means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

# A node that cannot be reached or stops answering (never retried here).
TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass
class NodeReplies:
    """What one node answered: a reply (or the ``ResponseError`` of that reply) per command, in
    order; ``error`` set when the node did not answer all of them (``replies`` is then short)."""

    node: str
    replies: list[Any] = field(default_factory=list)
    error: Exception | None = None


@dataclass
class _Batch:
    name: str
    pool: Any
    conn: Any
    commands: Sequence[Sequence[Any]]
    clean: bool = True  # every reply read (or nothing sent): the connection can go back


def run_per_node(
    client: Any, batches: Mapping[str, tuple[Any, Sequence[Sequence[Any]]]]
) -> dict[str, NodeReplies]:
    """Run ``batches`` (node name -> (``ClusterNode``, commands)) of a ``RedisCluster``
    ``client``, one pipeline per node, all nodes at once; returns each node's replies.

    Connections are taken for every node before anything is sent: an exception raised while a
    connection is made (a connect hook's refusal) leaves every node untouched."""
    out: dict[str, NodeReplies] = {}
    taken: list[_Batch] = []
    try:
        for name, (node, commands) in batches.items():
            pool = client.get_redis_connection(node).connection_pool
            try:
                conn = pool.get_connection()
            except TRANSPORT_ERRORS as exc:
                out[name] = NodeReplies(name, error=exc)
                continue
            taken.append(_Batch(name, pool, conn, commands))
        sent: list[_Batch] = []
        for batch in taken:
            batch.clean = False
            try:
                batch.conn.send_packed_command(batch.conn.pack_commands(batch.commands))
            except TRANSPORT_ERRORS as exc:
                out[batch.name] = NodeReplies(batch.name, error=exc)
                continue
            sent.append(batch)
        for batch in sent:
            replies: list[Any] = []
            try:
                for _ in batch.commands:
                    try:
                        replies.append(batch.conn.read_response())
                    except redis.exceptions.ResponseError as exc:
                        replies.append(exc)
            except TRANSPORT_ERRORS as exc:
                out[batch.name] = NodeReplies(batch.name, replies, exc)
                continue
            batch.clean = True
            out[batch.name] = NodeReplies(batch.name, replies)
    finally:
        for batch in taken:
            if not batch.clean:  # replies may still be on the socket: never reuse it
                batch.conn.disconnect()
            batch.pool.release(batch.conn)
    return out
