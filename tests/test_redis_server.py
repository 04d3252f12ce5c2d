"""The test Redis itself (tests/redis_server.py): it starts, answers, restarts empty and stops."""

from __future__ import annotations

import socket

import pytest

from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis


def test_the_shared_server_answers_and_is_empty_for_each_test(redis_server: RedisServer) -> None:
    assert redis_server.command("SET", "k", "v") == b"+OK\r\n"
    assert redis_server.command("DBSIZE") == b":1\r\n"


def test_the_shared_server_was_flushed(redis_server: RedisServer) -> None:
    assert redis_server.command("DBSIZE") == b":0\r\n"


def test_no_persistence_and_loopback_only(redis_server: RedisServer) -> None:
    assert redis_server.command("CONFIG", "GET", "save").endswith(b"$0\r\n\r\n")  # save is empty
    assert b"no" in redis_server.command("CONFIG", "GET", "appendonly")
    assert b"127.0.0.1" in redis_server.command("CONFIG", "GET", "bind")


def test_restart_keeps_the_port_and_loses_everything(own_redis_server: RedisServer) -> None:
    own_redis_server.command("SET", "k", "v")
    pid = own_redis_server.pid
    own_redis_server.restart()
    assert own_redis_server.pid != pid
    assert own_redis_server.command("DBSIZE") == b":0\r\n"


def test_kill_then_nothing_listens(own_redis_server: RedisServer) -> None:
    own_redis_server.kill()
    address = ("127.0.0.1", own_redis_server.port)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=1):
        pass


def test_stop_is_idempotent() -> None:
    server = RedisServer()
    server.stop()  # never started
    server.start()
    server.stop()
    server.stop()
