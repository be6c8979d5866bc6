"""Kubernetes manifests (plain or `helm template` output) described as pods, containers, kubelet
configuration, control-plane flags and RBAC bindings.

Pod specs are found and read by `engines/podspec.py`, the code the admission webhook uses, so a
manifest that `iac scan` calls privileged is one the webhook would deny, and the other way round.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cloudward.conformity.iac.model import Observation
from cloudward.engines.podspec import (
    RUNTIME_SOCKETS,
    WORKLOAD_TEMPLATES,
    containers,
    covers,
    host_path,
    items,
    pod_specs,
    strong_capabilities,
)

# Host paths whose mount hands the node over; the runtime sockets are judged on their own.
SENSITIVE_HOST_PATHS = ("/", "/etc", "/proc/**", "/root", "/var/lib/kubelet", "/var/lib/docker", "/boot",
                        "/dev", "/sys")
ANONYMOUS = frozenset({"system:anonymous", "system:unauthenticated"})
_HELM_SOURCE = re.compile(r"^#\s*Source:\s*(\S.*)$")


def is_manifest(document: Any) -> bool:
    return isinstance(document, Mapping) and isinstance(document.get("kind"), str) and "apiVersion" in document


def _line(node: Any, default: int) -> int:
    return int(getattr(node, "line", 0) or default)


def _context(node: Any) -> Mapping[str, Any]:
    return node if isinstance(node, Mapping) else {}


def _list(node: Any) -> list[Any]:
    return node if isinstance(node, list) else []


def _flags(container: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The program a container runs (basename of its first word) and its `--flag[=value]` options."""
    words = [str(w) for w in _list(container.get("command")) + _list(container.get("args"))
             if isinstance(w, (str, int, float))]
    if len(words) == 1 or (words and words[0] in ("sh", "/bin/sh", "bash", "/bin/bash")):
        words = " ".join(words).split()  # `sh -c "kube-apiserver --x=y"`
    program = ""
    flags: dict[str, str] = {}
    for word in words:
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            flags[name] = value if eq else "true"
        elif not program and not word.startswith("-"):
            base = word.rsplit("/", 1)[-1]
            if base in ("kube-apiserver", "etcd", "kubelet"):
                program = base
    return program, flags


def _pod(obj: Mapping[str, Any], spec: Mapping[str, Any], where: dict[str, Any]) -> Iterator[Observation]:
    path, doc_line, name = where["path"], where["line"], where["name"]
    spec_line = _line(spec, doc_line)
    pod_context = _context(spec.get("securityContext"))
    host_paths = []
    for volume in items(spec.get("volumes")):
        host = volume.get("hostPath")
        if isinstance(host, Mapping):
            host_paths.append((str(volume.get("name", "?")), host_path(str(host.get("path") or "/")), volume))
    sockets = [f"{n}:{p}" for n, p, _ in host_paths if any(covers(p, s) for s in RUNTIME_SOCKETS) and p != "/"]
    sensitive = [f"{n}:{p}" for n, p, _ in host_paths if any(covers(p, s) for s in SENSITIVE_HOST_PATHS)
                 and not any(covers(p, s) for s in RUNTIME_SOCKETS if p != "/")]
    privileged = [str(c.get("name", "?")) for _, c in containers(spec)
                  if _context(c.get("securityContext")).get("privileged") is True
                  or strong_capabilities(_context(c.get("securityContext")))]
    automount = spec.get("automountServiceAccountToken")
    facts: dict[str, Any] = {
        "kind": obj.get("kind"), "name": name, "namespace": where["namespace"],
        "host_pid": spec.get("hostPID") is True, "host_ipc": spec.get("hostIPC") is True,
        "host_network": spec.get("hostNetwork") is True,
        "host_path_volumes": [f"{n}:{p}" for n, p, _ in host_paths],
        "sensitive_host_paths": sensitive, "runtime_socket_mounts": sockets,
        "privileged_containers": privileged,
        "automount_service_account_token": automount is not False,
        "service_account": spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
    }
    base = {"path": path, "skip_at": ((path, spec_line), (path, doc_line)), "extra_location": where["extra"]}
    yield Observation("k8s_pod", facts, line=spec_line, key=f"{where['key']}", **base)
    for field_name, container in containers(spec):
        context = _context(container.get("securityContext"))
        run_as_user = context.get("runAsUser", pod_context.get("runAsUser"))
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        escalation = context.get("allowPrivilegeEscalation")
        capabilities = _context(context.get("capabilities"))
        added = _list(capabilities.get("add"))
        cname = str(container.get("name", "?"))
        cfacts: dict[str, Any] = {
            "kind": obj.get("kind"), "workload": name, "namespace": where["namespace"], "container": cname,
            "container_field": field_name, "image": container.get("image"),
            "privileged": context.get("privileged") is True,
            "allow_privilege_escalation": escalation if isinstance(escalation, bool) else "unset",
            "escalation_not_blocked": escalation is not False and context.get("privileged") is not True,
            "strong_capabilities": strong_capabilities(context),
            "added_capabilities": sorted(str(c).upper() for c in added),
            "run_as_user": run_as_user if isinstance(run_as_user, int) else "unset",
            "run_as_root": run_as_user == 0 and not isinstance(run_as_user, bool),
            "run_as_non_root": non_root is True,
            "root_not_excluded": non_root is not True and not (isinstance(run_as_user, int) and run_as_user > 0)
            and run_as_user != 0,
            "read_only_root_filesystem": context.get("readOnlyRootFilesystem") is True,
        }
        line = _line(container, spec_line)
        yield Observation("k8s_container", cfacts, path, line, f"{where['key']}/{field_name}/{cname}",
                          skip_at=((path, line), (path, doc_line)), extra_location=where["extra"])
        program, flags = _flags(container)
        if program:
            yield Observation(f"k8s_{program.replace('-', '_')}_flags", _flag_facts(program, flags), path, line,
                              f"{where['key']}/{cname}/{program}", skip_at=((path, line), (path, doc_line)),
                              extra_location=where["extra"])


def _flag_facts(program: str, flags: dict[str, str]) -> dict[str, Any]:
    facts: dict[str, Any] = {"program": program, "flags": sorted(flags)}
    if program == "kube-apiserver":
        facts["anonymous_auth"] = flags.get("anonymous-auth", "unset")
        facts["insecure_port"] = flags.get("insecure-port", "unset")
        facts["insecure_port_open"] = flags.get("insecure-port", "0") not in ("0", "")
        facts["authorization_mode"] = flags.get("authorization-mode", "unset")
        facts["always_allow"] = "AlwaysAllow" in flags.get("authorization-mode", "").split(",")
    elif program == "etcd":
        facts["client_cert_auth"] = flags.get("client-cert-auth", "false").lower() == "true"
        facts["listen_client_urls"] = flags.get("listen-client-urls", "")
        urls = [u.strip() for u in flags.get("listen-client-urls", "").split(",") if u.strip()]
        facts["plaintext_client_urls"] = [u for u in urls if u.startswith("http://")
                                          and not u.startswith(("http://127.", "http://localhost", "http://[::1]"))]
    elif program == "kubelet":
        facts["anonymous_auth"] = flags.get("anonymous-auth", "unset")
        facts["authorization_mode"] = flags.get("authorization-mode", "unset")
        facts["read_only_port"] = flags.get("read-only-port", "unset")
        facts["read_only_port_open"] = flags.get("read-only-port", "0") not in ("0", "")
    return facts


def _kubelet_config(obj: Mapping[str, Any], where: dict[str, Any]) -> Observation:
    authn = _context(obj.get("authentication"))
    authz = _context(obj.get("authorization"))
    port = obj.get("readOnlyPort", 0)
    facts = {
        "anonymous_auth": _context(authn.get("anonymous")).get("enabled") is True,
        "webhook_authn": _context(authn.get("webhook")).get("enabled") is not False,
        "authorization_mode": str(authz.get("mode", "Webhook")),
        "read_only_port": port if isinstance(port, int) else 0,
        "read_only_port_open": isinstance(port, int) and not isinstance(port, bool) and port > 0,
    }
    return Observation("kubelet_config", facts, where["path"], where["line"], where["key"],
                       skip_at=((where["path"], where["line"]),), extra_location=where["extra"])


def _rbac(obj: Mapping[str, Any], where: dict[str, Any]) -> Iterator[Observation]:
    kind = obj.get("kind")
    base: dict[str, Any] = {"kind": kind, "name": where["name"], "namespace": where["namespace"]}
    if kind in ("ClusterRoleBinding", "RoleBinding"):
        subjects = [s for s in items(obj.get("subjects")) if str(s.get("name")) in ANONYMOUS]
        role = _context(obj.get("roleRef")).get("name")
        facts = {**base, "anonymous_subjects": [str(s.get("name")) for s in subjects], "role": role}
        yield Observation("k8s_binding", facts, where["path"], where["line"], where["key"],
                          skip_at=((where["path"], where["line"]),), extra_location=where["extra"])
    elif kind in ("ClusterRole", "Role"):
        wildcard = 0
        for rule in items(obj.get("rules")):
            verbs, resources = _list(rule.get("verbs")), _list(rule.get("resources"))
            if "*" in verbs and "*" in resources:
                wildcard += 1
        yield Observation("k8s_role", {**base, "wildcard_rules": wildcard}, where["path"], where["line"],
                          where["key"], skip_at=((where["path"], where["line"]),), extra_location=where["extra"])


def observations(documents: list[tuple[int, Any]], path: str, text: str) -> Iterator[Observation]:
    sources = [(n, m.group(1)) for n, line in enumerate(text.splitlines(), start=1)
               if line.startswith("#") and (m := _HELM_SOURCE.match(line))]
    source_lines = [n for n, _ in sources]
    for index, (doc_start, obj) in enumerate(documents):
        for part, item_index in _flatten(obj):
            if not is_manifest(part):
                continue
            metadata = _context(part.get("metadata"))
            line = _line(part, doc_start)
            name = str(metadata.get("name", "?"))
            namespace = str(metadata.get("namespace", "default"))
            extra: dict[str, Any] = {"document": index + 1, "kind": part["kind"], "object": name}
            at = bisect.bisect_right(source_lines, line) - 1
            if at >= 0:
                extra["helm_source"] = sources[at][1]
            key = f"{part['kind']}/{namespace}/{name}" + (f"#{item_index}" if item_index is not None else "")
            where = {"path": path, "line": line, "name": name, "namespace": namespace, "extra": extra, "key": key}
            kind = part["kind"]
            if kind in WORKLOAD_TEMPLATES:
                for spec in pod_specs(part):
                    yield from _pod(part, spec, where)
            elif kind == "KubeletConfiguration":
                yield _kubelet_config(part, where)
            elif kind in ("ClusterRoleBinding", "RoleBinding", "ClusterRole", "Role"):
                yield from _rbac(part, where)


def _flatten(obj: Any) -> Iterator[tuple[Any, int | None]]:
    """A document, or each item of a `kind: List`."""
    if isinstance(obj, Mapping) and str(obj.get("kind", "")).endswith("List") and isinstance(obj.get("items"), list):
        for index, item in enumerate(obj["items"]):
            yield item, index
    else:
        yield obj, None
