"""The platform core: the one Finding model, rules, errors, config and scan orchestration.

Nothing here imports any other part of cloudward, so every capability can build on it.
"""
