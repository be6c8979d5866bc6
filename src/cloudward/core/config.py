"""Settings: defaults, then `cloudward.toml`, then `CLOUDWARD_*` environment variables.

The file is looked for at `--config`, else `./cloudward.toml`, else the user config dir. Every key
`[section] name` can be overridden by `CLOUDWARD_SECTION_NAME`; `CLOUDWARD_DB_URL` is the
documented shortcut for `[store] url`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloudward.core.errors import ConfigError


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = ""  # empty: SQLite in the user data directory


class ExposureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(default=512, ge=1, le=20000)
    connect_timeout: float = Field(default=1.5, gt=0, le=60)
    probe_timeout: float = Field(default=5.0, gt=0, le=300)
    rate: float = Field(default=0, ge=0, description="new connections per second, 0 = unlimited")
    max_hosts: int = Field(default=65536, ge=1)
    max_response_bytes: int = Field(default=256 * 1024, ge=1024)


class FimSettings(BaseModel):
    """`[fim]`: which paths `host fim` baselines, checks and watches (~/x = x in every home)."""

    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(default_factory=list, description="replace the built-in set; empty = built-in")
    extra_paths: list[str] = Field(default_factory=list, description="monitored in addition")

    @field_validator("paths", "extra_paths", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # CLOUDWARD_FIM_PATHS / CLOUDWARD_FIM_EXTRA_PATHS arrive as one string: comma-separated.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: str = ""  # empty: platformdirs' user data dir
    store: StoreSettings = Field(default_factory=StoreSettings)
    exposure: ExposureSettings = Field(default_factory=ExposureSettings)
    fim: FimSettings = Field(default_factory=FimSettings)

    def resolved_data_dir(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        from platformdirs import user_data_dir

        return Path(user_data_dir("cloudward", appauthor=False))


def _config_candidates(explicit: Path | None, env: Mapping[str, str]) -> list[Path]:
    if explicit is not None:
        return [explicit]
    if env.get("CLOUDWARD_CONFIG"):
        return [Path(env["CLOUDWARD_CONFIG"])]
    from platformdirs import user_config_dir

    return [Path("cloudward.toml"), Path(user_config_dir("cloudward", appauthor=False)) / "cloudward.toml"]


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sections = {name for name, f in Settings.model_fields.items() if f.annotation not in (str,)}
    for key, value in env.items():
        if not key.startswith("CLOUDWARD_") or key == "CLOUDWARD_CONFIG":
            continue
        name = key.removeprefix("CLOUDWARD_").lower()
        if name == "db_url":
            out.setdefault("store", {})["url"] = value
        elif name == "data_dir":
            out["data_dir"] = value
        else:
            section, _, field = name.partition("_")
            if section in sections and field:
                out.setdefault(section, {})[field] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    for candidate in _config_candidates(path, env):
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{candidate}: not valid TOML: {exc}") from None
            source = str(candidate)
            break
        if path is not None:
            raise ConfigError(f"{candidate}: config file not found")
    else:
        source = "defaults"
    try:
        return Settings.model_validate(_merge(data, _env_overrides(env)))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings ({source} + CLOUDWARD_* environment): {problems}") from None
