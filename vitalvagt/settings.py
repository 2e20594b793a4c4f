"""One settings object, read from ``VV_*`` environment variables at start-up and passed in.

The embedded default needs none of them: the database URL and the service passwords of the
embedded stack are read from its state directory (``vitalvagt stack status`` shows them).
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from vitalvagt.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The zone Danish patients, devices and teams live in: device clocks, schedules, rotas.
DEFAULT_LOCAL_TZ = "Europe/Copenhagen"


def default_state_dir() -> Path:
    # A source checkout keeps its state beside the code; an installed copy uses the user's dir.
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT / ".vv"
    return Path.home() / ".local" / "share" / "vitalvagt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VV_", extra="ignore", populate_by_name=True)

    state_dir: Path = Field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    # Defaults avoid the system's usual 5432 and 1883, which Debian's packages may occupy.
    pg_port: int = 55432
    mqtt_port: int = 51883  # the broker's services listener (plaintext, loopback)
    mqtt_tls_port: int = 58883  # its gateway listener (TLS), on VV_HOST
    database_url: SecretStr | None = None  # None: the embedded stack's database
    mqtt_host: str | None = None  # None: the embedded broker
    mqtt_tls_ca: Path | None = None  # None: the embedded stack's CA (tls/ca.crt)
    mqtt_username: str | None = None  # None: the component's service user on the embedded broker
    mqtt_password: SecretStr | None = None
    # Container deployments: service user -> MQTT password, for `vitalvagt broker config`.
    broker_service_passwords: dict[str, SecretStr] = Field(default_factory=dict)
    # Home gateway (tablet)
    gateway_id: str | None = None  # also its MQTT user name
    gateway_dir: Path | None = None  # outbox and pairing list; default <state_dir>/gateway
    # The local zone: device clocks, measurement schedules, times shown to people.
    # VV_GATEWAY_TZ is its name of 0.1.0.
    local_tz: str = Field(
        default=DEFAULT_LOCAL_TZ, validation_alias=AliasChoices("VV_LOCAL_TZ", "VV_GATEWAY_TZ")
    )
    outbox_max_mb: int = 200
    ble_transport: str = "native"  # native (BlueZ/Android via bleak) or bumble[:<hci spec>]
    log_level: str = "INFO"
    # Clinician API (api/config.py; docs/api.md)
    api_auth: str = "local"  # local (users in the database) or oidc (an external provider)
    api_jwt_secret: SecretStr | None = None  # None: generated once into <state_dir>/api/
    api_access_token_s: int = 900
    api_refresh_token_s: int = 8 * 3600
    api_login_failures_per_min: int = 5  # per user name and per client address
    api_max_body_bytes: int = 1_000_000
    api_oidc_issuer: str | None = None
    api_oidc_audience: str | None = None
    api_oidc_jwks_url: str | None = None
    api_oidc_roles_claim: str = "roles"
    api_oidc_teams_claim: str = "teams"


def local_zone(settings: Settings) -> ZoneInfo:
    """The local zone of ``settings``; a name that is no IANA zone is a ``ConfigError``."""
    try:
        return ZoneInfo(settings.local_tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"VV_LOCAL_TZ={settings.local_tz!r} is not an IANA time zone (e.g. {DEFAULT_LOCAL_TZ})"
        ) from None


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment; a value that cannot be read is a ``ConfigError``
    naming each variable and what it must be (never the value, which may be a secret)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_input=False, include_url=False):
            name = "VV_" + "_".join(str(p) for p in e["loc"]).upper()
            problems.append(f"{name}: {e['msg']}")
        raise ConfigError("bad setting: " + "; ".join(problems)) from None
    except SettingsError as exc:  # a value meant as JSON that is not
        field_name = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
        raise ConfigError(
            f"bad setting: VV_{field_name.upper()}: not valid JSON"
            ' (an object, e.g. {"vv-ingest": "secret"})'
        ) from None
