"""Cloud providers' security/monitoring agents: installed, or left with the binary removed or the unit masked.

Why: cloud-mining crews (TeamTNT and the groups that copied its scripts) uninstall the provider's
host agent before mining — Alibaba Cloud's Aegis/Cloud Assistant, Tencent Cloud's YunJing and
stargate, Huawei Cloud's HostGuard, AWS's SSM and CloudWatch agents — so nothing reports the
intrusion. A real uninstall removes the agent's directory; a hurried kill leaves the directory,
the unit or the init script behind with the binary gone, or masks the unit (`-> /dev/null`) so it
never starts again. Those remains are what this collector reports (subject `cloud_agent`, one per
agent with any trace). An agent that is simply not installed leaves no trace and no observation.
"""

from __future__ import annotations

import fnmatch
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["AGENTS", "Agent", "collect"]

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    vendor: str
    markers: tuple[str, ...]  # directories/files the install creates (left behind by a crude removal)
    binaries: tuple[str, ...]  # at least one exists while the agent is installed; `*` matches one component
    units: tuple[str, ...] = ()  # systemd units
    init_scripts: tuple[str, ...] = ()


AGENTS: tuple[Agent, ...] = (
    Agent("aegis", "Alibaba Cloud Security Center (Aegis)", ("/usr/local/aegis",),
          ("/usr/local/aegis/aegis_client/aegis_*/AliYunDun", "/usr/local/aegis/aegis_update/AliYunDunUpdate",
           "/usr/local/aegis/aegis_client/aegis_*/AliYunDunMonitor"),
          ("aegis.service",), ("/etc/init.d/aegis",)),
    Agent("aliyun-assist", "Alibaba Cloud Assistant", ("/usr/local/share/aliyun-assist",),
          ("/usr/sbin/aliyun-service", "/usr/local/share/aliyun-assist/*/aliyun-service"),
          ("aliyun.service",)),
    Agent("yunjing", "Tencent Cloud Workload Protection (YunJing)", ("/usr/local/qcloud/YunJing",),
          ("/usr/local/qcloud/YunJing/YDEyes/YDService", "/usr/local/qcloud/YunJing/YDLive/YDLive"),
          ("YDService.service",)),
    Agent("stargate", "Tencent Cloud stargate agent", ("/usr/local/qcloud/stargate",),
          ("/usr/local/qcloud/stargate/bin/sgagent",)),
    Agent("hostguard", "Huawei Cloud Host Security (HostGuard)", ("/usr/local/hostguard",),
          ("/usr/local/hostguard/bin/hostguard",), ("hostguard.service",)),
    Agent("amazon-ssm-agent", "AWS Systems Manager agent", ("/var/lib/amazon/ssm", "/etc/amazon/ssm"),
          ("/usr/bin/amazon-ssm-agent", "/snap/amazon-ssm-agent/current/amazon-ssm-agent"),
          ("amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service")),
    Agent("amazon-cloudwatch-agent", "Amazon CloudWatch agent", ("/opt/aws/amazon-cloudwatch-agent",),
          ("/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent",), ("amazon-cloudwatch-agent.service",)),
)


def _expand(ctx: HostContext, pattern: str) -> list[str]:
    """Inner paths matching a pattern whose `*` stands for one path component (bounded listing)."""
    parts = PurePosixPath(pattern).parts[1:]
    found = ["/"]
    for part in parts:
        step: list[str] = []
        for base in found:
            if "*" in part:
                step += [p for p in ctx.root.glob(base) if fnmatch.fnmatchcase(PurePosixPath(p).name, part)][:64]
            else:
                step.append(f"{base.rstrip('/')}/{part}")
        found = step
    return found


def _present(ctx: HostContext, pattern: str, *, regular: bool = False) -> list[str]:
    out = []
    for path in _expand(ctx, pattern):
        try:
            mode = ctx.root.stat(path).st_mode
        except OSError:
            continue
        if not regular or stat.S_ISREG(mode):
            out.append(path)
    return out


def _unit_state(ctx: HostContext, unit: str) -> tuple[bool, bool, bool]:
    """(present, masked, enabled) of a systemd unit in the root."""
    present = masked = False
    for directory in UNIT_DIRS:
        path = f"{directory}/{unit}"
        try:
            info = ctx.root.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            try:
                target = ctx.root.readlink(path)
            except OSError:
                target = ""
            if target == "/dev/null":
                masked = True
                continue
        present = True
    enabled = False
    for wants in ctx.root.glob("/etc/systemd/system", ".wants"):
        try:
            ctx.root.lstat(f"{wants}/{unit}")
        except OSError:
            continue
        enabled = True
        break
    return present, masked, enabled


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    for agent in AGENTS:
        try:
            markers = [m for pattern in agent.markers for m in _present(ctx, pattern)]
            binaries = [b for pattern in agent.binaries for b in _present(ctx, pattern, regular=True)]
            init_scripts = [s for pattern in agent.init_scripts for s in _present(ctx, pattern)]
            units_present: list[str] = []
            units_masked: list[str] = []
            units_enabled: list[str] = []
            for unit in agent.units:
                present, masked, enabled = _unit_state(ctx, unit)
                if present:
                    units_present.append(unit)
                if masked:
                    units_masked.append(unit)
                if enabled:
                    units_enabled.append(unit)
        except OSError as exc:
            ctx.error(f"agent {agent.name}", f"cannot inspect {agent.vendor}: {exc}")
            continue
        traces = markers or init_scripts or units_present or units_masked or units_enabled
        if not traces and not binaries:
            continue  # not installed: nothing to say
        if units_masked:
            state = "unit_masked"
        elif binaries:
            state = "installed"
        else:
            state = "binary_missing"
        facts: dict[str, object] = {
            "agent": agent.name,
            "vendor": agent.vendor,
            "state": state,
            "markers_present": markers,
            "binaries_present": binaries,
            "binaries_expected": list(agent.binaries),
            "init_scripts": init_scripts,
            "units_present": units_present,
            "units_masked": units_masked,
            "units_enabled": units_enabled,
        }
        located = markers or binaries or init_scripts
        yield HostObservation("cloud_agent", facts, path=located[0] if located else None, key=agent.name)
