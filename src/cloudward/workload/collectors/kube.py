"""Kubernetes node: kubelet anonymous auth, AlwaysAllow and read-only port; etcd listen URLs and client-cert auth.

Why: TeamTNT's Kubernetes campaigns (and Hildegard, per Unit 42) entered through kubelets that
answer anonymous requests — `/pods` to list, `/run` and `/exec` to run commands in any pod — and
through etcd servers that hand out every Secret of the cluster to whoever connects. The exposure
scanner proves it from the network; this collector reads the configuration that causes it.

kubelet (subject `kubelet_config`, one per node): the KubeletConfiguration file (the `--config`
path, else /var/lib/kubelet/config.yaml, /etc/kubernetes/kubelet-config.yaml, the EKS
/etc/kubernetes/kubelet/kubelet-config.json …) overridden by command-line flags found in
/etc/default/kubelet, /etc/sysconfig/kubelet, /var/lib/kubelet/kubeadm-flags.env and kubelet.service
with its drop-ins. Defaults follow the kubelet: with a config file anonymous auth is off,
authorization is Webhook and the read-only port is 0; with flags only they are on, AlwaysAllow and
10255. etcd (subject `etcd_config`, one per configuration file): /etc/etcd/etcd.conf.yml,
/etc/etcd/etcd.conf and /etc/default/etcd (ETCD_* variables), the kubeadm static pod
/etc/kubernetes/manifests/etcd.yaml and etcd.service. YAML is read with `yaml.safe_load`, size-
bounded; a malformed file is reported and skipped.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import yaml

from cloudward.workload.collectors.docker import systemd_directives
from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["collect", "parse_flags", "url_is_loopback"]

MAX_FILE_BYTES = 1024 * 1024
KUBELET_CONFIGS = ("/var/lib/kubelet/config.yaml", "/etc/kubernetes/kubelet-config.yaml",
                   "/etc/kubernetes/kubelet/kubelet-config.json", "/etc/kubernetes/kubelet-config",
                   "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/kubelet/config.yaml")
KUBELET_ENV_FILES = ("/etc/default/kubelet", "/etc/sysconfig/kubelet", "/var/lib/kubelet/kubeadm-flags.env")
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
ETCD_YAML = ("/etc/etcd/etcd.conf.yml", "/etc/etcd/etcd.conf.yaml", "/etc/etcd.conf.yml")
ETCD_ENV = ("/etc/etcd/etcd.conf", "/etc/default/etcd", "/etc/sysconfig/etcd")
ETCD_MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
_KUBELET_FLAGS = ("anonymous-auth", "authorization-mode", "read-only-port", "config", "client-ca-file")


def _read(ctx: HostContext, path: str, limit: int = MAX_FILE_BYTES) -> str | None:
    return ctx.read_config(path, limit)


def _yaml(ctx: HostContext, path: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        ctx.error(path, f"malformed YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return None


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def parse_flags(args: list[str]) -> dict[str, str]:
    """`--name=value`, `--name value` and bare `--name` (= "true") into a dict; later ones win."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 < len(args) and not args[i + 1].startswith("-"):
                    value = args[i + 1]
                    i += 1
                else:
                    value = "true"
            out[name] = value
        i += 1
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return None


def _unit_files(ctx: HostContext, unit: str) -> list[str]:
    files: list[str] = []
    for directory in UNIT_DIRS:
        if ctx.root.is_file(f"{directory}/{unit}"):
            files.append(f"{directory}/{unit}")
            break
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):
        for path in ctx.root.glob(f"{directory}/{unit}.d", ".conf"):
            dropins[path.rsplit("/", 1)[1]] = path
    files.extend(dropins[name] for name in sorted(dropins))
    return files


def _env_values(text: str) -> list[tuple[str, str, int]]:
    """(NAME, value, line) of shell-style assignments (`NAME="..."`, `export NAME=...`)."""
    out: list[tuple[str, str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].strip()
        name, sep, value = line.partition("=")
        if sep and name.strip().replace("_", "").isalnum():
            words = _split(value)
            out.append((name.strip(), " ".join(words), number))
    return out


def _kubelet(ctx: HostContext) -> HostObservation | None:
    flags: dict[str, tuple[str, str]] = {}  # flag -> (value, file:line)

    def take(args: list[str], where: str) -> None:
        for name, value in parse_flags(args).items():
            if name in _KUBELET_FLAGS:
                flags[name] = (value, where)

    flag_files: list[str] = []
    for path in KUBELET_ENV_FILES:
        text = _read(ctx, path)
        if text is None:
            continue
        flag_files.append(path)
        for _name, value, line in _env_values(text):
            take(_split(value), f"{path}:{line}")
    for path in _unit_files(ctx, "kubelet.service"):
        text = _read(ctx, path)
        if text is None:
            continue
        flag_files.append(path)
        for key, value, line in systemd_directives(text, "Service"):
            if key == "ExecStart" and value:
                take(_split(value)[1:], f"{path}:{line}")
            elif key == "Environment":
                for assignment in _split(value):
                    _, _, env_value = assignment.partition("=")
                    take(_split(env_value), f"{path}:{line}")

    config_path = flags.get("config", ("", ""))[0]
    candidates = [config_path] if config_path else list(KUBELET_CONFIGS)
    config: dict[str, Any] | None = None
    used = ""
    for path in candidates:
        text = _read(ctx, path)
        if text is None:
            continue
        data = _yaml(ctx, path, text)  # JSON is YAML too
        if not isinstance(data, dict):
            if data is not None:
                ctx.error(path, "kubelet configuration is not a mapping; ignored")
            continue
        if data.get("kind") not in (None, "KubeletConfiguration"):
            continue  # /etc/kubernetes/kubelet.conf is usually a kubeconfig, not a KubeletConfiguration
        config, used = data, path
        break
    if config is None and (config_path or not flag_files):
        # No kubelet here, or a --config file that does not exist yet (a kubeadm node before
        # `kubeadm init`/`join`): that kubelet cannot start, so it exposes nothing.
        return None

    sources: dict[str, str] = {}
    if config is not None:
        authn = _mapping(config.get("authentication"))
        anonymous = _mapping(authn.get("anonymous"))
        authz = _mapping(config.get("authorization"))
        anon = _as_bool(anonymous.get("enabled"))
        anonymous_auth = anon if anon is not None else False
        mode = str(authz.get("mode") or "Webhook")
        port_value = config.get("readOnlyPort", 0)
        for fact, present in (("anonymous_auth", "enabled" in anonymous), ("authorization_mode", "mode" in authz),
                              ("read_only_port", "readOnlyPort" in config)):
            sources[fact] = used if present else f"default ({used})"
        defaults_from = "config file"
    else:
        anonymous_auth, mode, port_value = True, "AlwaysAllow", 10255
        sources = {f: "default (kubelet flags)" for f in ("anonymous_auth", "authorization_mode", "read_only_port")}
        defaults_from = "flags"
    if "anonymous-auth" in flags:
        parsed = _as_bool(flags["anonymous-auth"][0])
        if parsed is not None:
            anonymous_auth = parsed
            sources["anonymous_auth"] = flags["anonymous-auth"][1]
    if "authorization-mode" in flags:
        mode = flags["authorization-mode"][0]
        sources["authorization_mode"] = flags["authorization-mode"][1]
    if "read-only-port" in flags:
        port_value = flags["read-only-port"][0]
        sources["read_only_port"] = flags["read-only-port"][1]
    try:
        read_only_port = int(port_value)
    except (TypeError, ValueError):
        read_only_port = -1
        ctx.error(used or "kubelet flags", f"kubelet readOnlyPort is not a number: {str(port_value)[:40]!r}")
    facts = {
        "anonymous_auth": anonymous_auth,
        "authorization_mode": mode,
        "authorization_always_allow": "AlwaysAllow" in mode.split(","),
        "read_only_port": read_only_port,
        "config_file": used or None,
        "flag_files": flag_files,
        "defaults_from": defaults_from,
        "sources": sources,
    }
    return HostObservation("kubelet_config", facts, path=used or (flag_files[0] if flag_files else None),
                           key="kubelet")


def url_is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _etcd_facts(settings: dict[str, str], where: dict[str, str], path: str) -> dict[str, Any]:
    urls_text = settings.get("listen-client-urls", "http://localhost:2379")
    urls = [u.strip() for u in urls_text.split(",") if u.strip()]
    cert_auth = _as_bool(settings.get("client-cert-auth", "false")) is True
    return {
        "listen_client_urls": urls,
        "listens_beyond_loopback": any(not url_is_loopback(u) for u in urls),
        "plaintext_beyond_loopback": any(u.lower().startswith("http://") and not url_is_loopback(u) for u in urls),
        "client_cert_auth": cert_auth,
        "trusted_ca_file": settings.get("trusted-ca-file") or None,
        "cert_file": settings.get("cert-file") or None,
        "sources": {k: where.get(k, f"default ({path})") for k in ("listen-client-urls", "client-cert-auth")},
    }


def _etcd(ctx: HostContext) -> Iterator[HostObservation]:
    for path in ETCD_YAML:
        text = _read(ctx, path)
        if text is None:
            continue
        data = _yaml(ctx, path, text)
        if not isinstance(data, dict):
            if data is not None:
                ctx.error(path, "etcd configuration is not a mapping; ignored")
            continue
        settings: dict[str, str] = {}
        urls = data.get("listen-client-urls")
        if urls is not None:
            settings["listen-client-urls"] = ",".join(map(str, urls)) if isinstance(urls, list) else str(urls)
        security = data.get("client-transport-security")
        if isinstance(security, dict):
            for key in ("client-cert-auth", "trusted-ca-file", "cert-file"):
                value = security.get(key)
                if value is not None:
                    settings[key] = str(value).lower() if isinstance(value, bool) else str(value)
        yield HostObservation("etcd_config", _etcd_facts(settings, {k: path for k in settings}, path),
                              path=path, key=path)
    for path in ETCD_ENV:
        text = _read(ctx, path)
        if text is None:
            continue
        settings, where = {}, {}
        for name, value, line in _env_values(text):
            if name.startswith("ETCD_"):
                key = name[5:].lower().replace("_", "-")
                settings[key] = value
                where[key] = f"{path}:{line}"
        if not settings:
            continue
        yield HostObservation("etcd_config", _etcd_facts(settings, where, path), path=path, key=path)
    text = _read(ctx, ETCD_MANIFEST)
    if text is not None:
        data = _yaml(ctx, ETCD_MANIFEST, text)
        command: list[str] = []
        spec = data.get("spec") if isinstance(data, dict) else None
        containers = spec.get("containers") if isinstance(spec, dict) else None
        for container in containers if isinstance(containers, list) else []:
            if isinstance(container, dict):
                for part in ("command", "args"):
                    values = container.get(part)
                    if isinstance(values, list):
                        command.extend(str(v) for v in values)
        if command:
            flags = parse_flags(command)
            yield HostObservation("etcd_config", _etcd_facts(flags, {k: ETCD_MANIFEST for k in flags}, ETCD_MANIFEST),
                                  path=ETCD_MANIFEST, key=ETCD_MANIFEST)
    for path in _unit_files(ctx, "etcd.service"):
        unit = _read(ctx, path)
        if unit is None:
            continue
        for key, value, line in systemd_directives(unit, "Service"):
            if key == "ExecStart" and "--listen-client-urls" in value:
                flags = parse_flags(_split(value)[1:])
                yield HostObservation("etcd_config", _etcd_facts(flags, {k: f"{path}:{line}" for k in flags}, path),
                                      path=path, line=line, key=path)


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    try:
        kubelet = _kubelet(ctx)
    except Exception as exc:  # the etcd part must still run
        ctx.error("kubelet", f"cannot interpret kubelet configuration: {type(exc).__name__}: {exc}")
        kubelet = None
    if kubelet is not None:
        yield kubelet
    try:
        yield from _etcd(ctx)
    except Exception as exc:
        ctx.error("etcd", f"cannot interpret etcd configuration: {type(exc).__name__}: {exc}")
