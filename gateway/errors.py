"""The gateway's exceptions: one base, and subclasses that name the failure."""

from __future__ import annotations

from vitalvagt.errors import ConfigError, VitalvagtError


class GatewayError(VitalvagtError):
    """Base of every error the gateway raises on purpose."""


class GatewaySettingError(GatewayError, ConfigError):
    """A gateway setting is missing or wrong (the CLI exits 2); the message names it."""


class DecodeError(GatewayError):
    """Bytes from a device that cannot be read as the characteristic they claim to be.

    ``characteristic`` is the 16-bit UUID in upper-case hex ('2A35'), or the UUID as given
    when it is not one the gateway knows; ``offset`` is the byte offset in the payload where
    reading failed (None when the failure is not about a byte, e.g. an unknown UUID);
    ``reason`` says what was wrong in words an operator can act on.
    """

    def __init__(
        self, characteristic: str, offset: int | None, reason: str, name: str = ""
    ) -> None:
        # All four in args so that the error pickles and compares like any exception.
        super().__init__(characteristic, offset, reason, name)
        self.characteristic = characteristic
        self.offset = offset
        self.reason = reason
        self.name = name

    def __str__(self) -> str:
        head = f"{self.characteristic} {self.name}" if self.name else self.characteristic
        where = "" if self.offset is None else f" byte {self.offset}:"
        return f"{head}:{where} {self.reason}"
