"""Where each component finds the database and the broker, and with which credentials.

Configured ones (VV_DATABASE_URL, VV_MQTT_HOST, VV_MQTT_PASSWORD, VV_MQTT_TLS_CA) come first;
without them, the embedded stack's, read from its state directory (vitalvagt/stack_state.py).
A missing or contradictory setting is a ``ConfigError`` naming the setting and what to do.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from vitalvagt.broker import is_service_user
from vitalvagt.errors import ConfigError
from vitalvagt.settings import Settings
from vitalvagt.stack_state import (
    SERVICES_HOST,
    connect_host,
    embedded_database_url,
    stack_paths,
    stack_secrets,
)


def with_stack_defaults(settings: Settings) -> Settings:
    """Fill the database URL from the embedded stack when none was configured."""
    if settings.database_url is None:
        with contextlib.suppress(FileNotFoundError):
            url = embedded_database_url(settings)
            return settings.model_copy(update={"database_url": SecretStr(url)})
    return settings


@dataclass(frozen=True)
class MqttBroker:
    host: str
    port: int
    tls_ca: str | None  # None: plaintext


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    username: str
    password: str
    tls_ca: str | None  # None: plaintext


def services_broker(settings: Settings) -> MqttBroker:
    """The services listener: VV_MQTT_HOST:VV_MQTT_PORT, else the embedded one on loopback.
    Plaintext, unless a remote one (VV_MQTT_HOST) is reached with TLS (VV_MQTT_TLS_CA)."""
    if settings.mqtt_host:
        ca = str(settings.mqtt_tls_ca) if settings.mqtt_tls_ca else None
        return MqttBroker(settings.mqtt_host, settings.mqtt_port, ca)
    return MqttBroker(SERVICES_HOST, settings.mqtt_port, None)


def gateway_broker(settings: Settings) -> MqttBroker:
    """The gateway listener, always TLS: VV_MQTT_HOST:VV_MQTT_TLS_PORT verified against
    VV_MQTT_TLS_CA, else the embedded one on VV_HOST verified against the stack's CA."""
    if settings.mqtt_tls_ca:
        ca = Path(settings.mqtt_tls_ca)
    elif settings.mqtt_host:
        raise ConfigError(
            f"gateways connect to {settings.mqtt_host} with TLS: set VV_MQTT_TLS_CA to the CA"
            " file that signed its certificate (the operator gives it out)"
        )
    else:
        ca = stack_paths(settings).ca_cert
        if not ca.exists():
            raise ConfigError(
                f"no CA file {ca} for the embedded broker's TLS listener: run"
                " `vitalvagt stack up` first or set VV_MQTT_TLS_CA"
            )
    host = settings.mqtt_host or connect_host(settings.host)
    return MqttBroker(host, settings.mqtt_tls_port, str(ca))


def mqtt_endpoint(settings: Settings, user: str) -> MqttEndpoint:
    """The broker and credentials for ``user`` (VV_MQTT_USERNAME if set): a service user
    (``vv-*``) gets the services listener, a gateway the TLS gateway listener. The password
    is VV_MQTT_PASSWORD if set, else a service's from the embedded stack."""
    username = settings.mqtt_username or user
    gateway = not is_service_user(username)
    if settings.mqtt_password is not None:
        password = settings.mqtt_password.get_secret_value()
    elif gateway:
        raise ConfigError(
            f"no MQTT password for gateway {username!r}: set VV_MQTT_PASSWORD to the one"
            " `vitalvagt admin add-gateway` printed"
        )
    else:
        paths = stack_paths(settings)
        if not paths.secrets.exists():
            raise ConfigError(
                "no MQTT password: set VV_MQTT_PASSWORD or run `vitalvagt stack up` first"
            )
        password = stack_secrets(paths).get(username, "")
        if not password:
            raise ConfigError(f"the embedded stack has no MQTT user {username!r}")
    broker = gateway_broker(settings) if gateway else services_broker(settings)
    return MqttEndpoint(broker.host, broker.port, username, password, broker.tls_ca)


def database_url(settings: Settings) -> str:
    """VV_DATABASE_URL if set, else the embedded stack's database."""
    url = with_stack_defaults(settings).database_url
    if url is None:
        raise ConfigError("no database: set VV_DATABASE_URL or run `vitalvagt stack up` first")
    return url.get_secret_value()
