"""Exposure scanning: the attacker's-eye view of a network, probe by probe, judged by YAML rules."""
