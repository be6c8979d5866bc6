import pytest

from cloudward.core.config import load_settings
from cloudward.core.errors import ConfigError
from cloudward.core.finding import Finding, Target
from cloudward.core.redact import mask, secret_hmac


def test_defaults_file_and_env_layering(tmp_path):
    cfg = tmp_path / "cloudward.toml"
    cfg.write_text('data_dir = "/tmp/cw"\n[exposure]\nconcurrency = 100\nconnect_timeout = 2.5\n')
    settings = load_settings(cfg, env={"CLOUDWARD_EXPOSURE_CONCURRENCY": "7", "CLOUDWARD_DB_URL": "sqlite:///x.db"})
    assert settings.exposure.concurrency == 7          # env beats file
    assert settings.exposure.connect_timeout == 2.5     # file beats default
    assert settings.store.url == "sqlite:///x.db"
    assert str(settings.resolved_data_dir()) == "/tmp/cw"


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "cloudward.toml"
    cfg.write_text("[exposure\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})
    cfg.write_text("[exposure]\nconcurrency = 0\n")
    with pytest.raises(ConfigError, match=r"exposure\.concurrency"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="timeout"):
        load_settings(None, env={"CLOUDWARD_EXPOSURE_CONNECT_TIMEOUT": "soon", "CLOUDWARD_CONFIG": str(tmp_path / "x")})


def _finding(**kw):
    base = dict(rule_id="redis.unauthenticated", title="t", severity="critical", category="exposure",
                target=Target(kind="service", name="127.0.0.1:6379"))
    return Finding(**{**base, **kw})


def test_fingerprint_is_stable_and_ignores_location_and_evidence():
    a = _finding(location={"line": 3}, evidence={"version": "7.0.15"})
    b = _finding(location={"line": 90}, evidence={"version": "7.2.0"})
    assert a.fingerprint == b.fingerprint
    assert _finding(key="other").fingerprint != a.fingerprint
    assert _finding(target=Target(kind="service", name="127.0.0.2:6379")).fingerprint != a.fingerprint


def test_contract_shape():
    data = _finding().to_contract()
    assert data["severity"] == "critical" and data["category"] == "exposure"
    assert data["target"] == {"kind": "service", "name": "127.0.0.1:6379"}
    assert "key" not in data


def test_secrets_never_shown_raw():
    assert mask("AKIAIOSFODNN7EXAMPLE") == "AKIA************MPLE"
    assert mask("short") == "*****"
    assert secret_hmac("s3cret", b"k1") != secret_hmac("s3cret", b"k2")
    assert "s3cret" not in secret_hmac("s3cret", b"k1")
