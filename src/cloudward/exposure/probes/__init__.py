"""One module per service. Each probe identifies its service by what the service answers and
collects read-only facts; it never judges (YAML rules in `exposure/rules/` do)."""
