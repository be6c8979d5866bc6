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
