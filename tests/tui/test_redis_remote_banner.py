"""The monitor on a Sentinel service no sentinel answers for, a TLS server whose certificate the
CA file does not sign, and as an ACL user without the permissions: the banner names what is wrong
(in one line), the sessions are still shown."""

from __future__ import annotations

import pytest

from sessionmon.core.auth import Auth
from sessionmon.core.runtime import connect_for, make_blacklist
from sessionmon.core.settings import Settings
from sessionmon.tui.poller import REDIS_DOWN
from tests.redis_acl import SESSIONMON_RULES, add_user
from tests.redis_server import RedisProcess, free_port
from tests.redis_tls import TlsRedis
from tests.tui.conftest import SIZE, loaded, wait_for
from tests.tui.test_outages import banner_text


async def shows(make_app, auth: Auth, settings: Settings, clock, needle: str) -> None:
    auth.login("u1", "ann@example.com", "Ann")
    assert settings.redis_url is not None
    client = connect_for(settings, settings.redis_url)
    app = make_app(blacklist=make_blacklist(settings, client, clock))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            await wait_for(pilot, lambda: needle in banner_text(app), f"the banner: {needle}")
            text = banner_text(app)
            assert REDIS_DOWN in text and "Traceback" not in text
            assert len(app.model) == 1
    finally:
        client.close()


async def test_no_sentinel_answering(make_app, auth: Auth, settings: Settings, clock) -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/smtest"
    s = settings.with_(redis_url=url, redis_timeout=0.5)
    await shows(make_app, auth, s, clock, "no Redis Sentinel answered")


@pytest.mark.parametrize(
    ("ca", "needle"),
    [("other-ca.crt", "TLS handshake failed"), ("ca.crt", None)],
)
async def test_tls(
    make_app, auth: Auth, settings: Settings, clock, tls_redis: TlsRedis, ca: str, needle
) -> None:
    c = tls_redis.certs.path
    s = settings.with_(
        redis_url=tls_redis.url(),
        redis_ca_file=c(ca),
        redis_cert_file=c("client.crt"),
        redis_key_file=c("client.key"),
    )
    if needle is not None:
        await shows(make_app, auth, s, clock, needle)
        return
    assert s.redis_url is not None
    client = connect_for(s, s.redis_url)
    app = make_app(blacklist=make_blacklist(s, client, clock))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            await wait_for(pilot, lambda: app.snapshot.redis.ok, "Redis over TLS")
            assert banner_text(app) == ""
    finally:
        client.close()


async def test_acl_user_without_the_permissions(
    make_app, auth: Auth, settings: Settings, clock, redis_process: RedisProcess
) -> None:
    user = add_user(redis_process, "elsewhere", SESSIONMON_RULES.format(prefix="other:"))
    s = settings.with_(redis_url=user.url)
    await shows(make_app, auth, s, clock, "NOPERM")


async def test_a_cluster_down_at_start_is_the_banner_until_it_answers(
    auth: Auth, settings: Settings, clock, tmp_path
) -> None:
    """A Redis Cluster's layout is read when its client is made: with every node down the
    monitor opens anyway (the banner names it, the sessions are shown) and connects by itself
    once the cluster answers."""
    from tests.redis_cluster import RedisClusterProcesses
    from tests.tui.test_startup import monitor

    auth.login("u1", "ann@example.com", "Ann")
    cluster = RedisClusterProcesses(tmp_path / "cluster", masters=3).start()
    try:
        for node in cluster.nodes:
            node.stop()
        s = settings.with_(redis_url=cluster.url, interval=0.2, redis_timeout=0.5)
        with monitor(s, clock) as m:
            app = m.app
            async with app.run_test(size=SIZE) as pilot:
                await loaded(pilot)
                await wait_for(
                    pilot, lambda: "no seed answered" in banner_text(app), "the cluster's reason"
                )
                text = banner_text(app)
                assert REDIS_DOWN in text and "Traceback" not in text
                assert len(app.model) == 1
                for node in cluster.nodes:
                    node.start()
                cluster.wait_ok()
                await wait_for(pilot, lambda: app.snapshot.redis.ok, "the cluster to answer")
                await wait_for(pilot, lambda: banner_text(app) == "", "the banner cleared")
    finally:
        cluster.stop()
