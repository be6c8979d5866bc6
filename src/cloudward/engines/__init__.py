"""Shared evaluators that turn facts plus rules into verdicts; they import only `core`."""
