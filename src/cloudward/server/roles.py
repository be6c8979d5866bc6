"""Roles, ordered: every route names the least role that may call it."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    READ_ONLY = "read-only"
    ANALYST = "analyst"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown role {text!r} (choose from {choices})") from None


_RANK = {Role.READ_ONLY: 0, Role.ANALYST: 1, Role.ADMIN: 2}
