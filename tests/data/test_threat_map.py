"""Every built-in rule belongs to at least one link of the TeamTNT chain in data/threat-map.yaml, so
the audit summary (and anything grouping findings by the chain) never drops a finding silently."""

from __future__ import annotations

from fnmatch import fnmatch

from cloudward.cli.audit import threat_links
from cloudward.cli.common import load_all_rules
from cloudward.engines.osv.findings import RULE_ID as PACKAGE_RULE

CODE_RULES = [PACKAGE_RULE]  # findings made in code, without a rule file


def test_every_builtin_rule_sits_on_a_link_of_the_chain() -> None:
    globs = [g for link in threat_links() for g in link["rules"]]
    orphans = sorted(r.id for r in load_all_rules() if not any(fnmatch(r.id, g) for g in globs))
    assert orphans == []


def test_every_glob_names_at_least_one_rule() -> None:
    ids = [r.id for r in load_all_rules()] + CODE_RULES
    unused = sorted(g for link in threat_links() for g in link["rules"] if not any(fnmatch(i, g) for i in ids))
    assert unused == []


# Where each network rule belongs: the proxies and kubelet signatures by the service they guard or
# watch, every signature also by the THREAT-MAP.md row its `threat_map` metadata names (a rule tag).
NETWORK_LINKS = {
    "network.redis_proxy.": "Initial access: unauthenticated Redis",
    "network.docker_proxy.": "Initial access: exposed Docker Engine API",
    "network.sig.kubelet_": "Initial access: kubelet",
    "threat_map:exploitation_of_redis": "Initial access: unauthenticated Redis",
    "threat_map:exploitation_of_docker_api": "Initial access: exposed Docker Engine API",
    "threat_map:execution": "Execution and persistence",
    "threat_map:credential_access": "Credential access",
    "threat_map:command_and_control": "Command and control",
    "threat_map:impact": "Impact",
    "threat_map:reconnaissance": "Impact",  # scanners are attacker tooling there, like host.tooling.*
}


def test_network_rules_sit_on_the_link_of_their_row() -> None:
    network = [r for r in load_all_rules() if r.id.startswith("network.")]
    assert {r.engine_name for r in network} == {"redis_proxy", "docker_proxy", "suricata", "scan"}
    links, misplaced = threat_links(), []
    for rule in network:
        on = [link["link"] for link in links if any(fnmatch(rule.id, g) for g in link["rules"])]
        wanted = [NETWORK_LINKS[k] for k in NETWORK_LINKS if rule.id.startswith(k) or k in rule.tags]
        assert wanted, f"{rule.id}: no expected link (a new threat_map row?)"
        misplaced += [(rule.id, w) for w in wanted if not any(name.startswith(w) for name in on)]
    assert misplaced == []
