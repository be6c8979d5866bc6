"""Conformity: the posture of cloud accounts (`aws/`) and of infrastructure as code (`iac/`).

Both judge configuration, not content: collectors (boto3 for accounts, parsers for IaC files) turn
what they read into resources with flat facts, and YAML rules decide with the shared condition
language (`cloudward.engines.conditions`). Compliance frameworks map rule ids to controls in data
files beside the rules, so a framework can change without touching a rule.
"""
