"""The shared core's exception base. Each component has its own base; these are the core's."""


class VitalvagtError(Exception):
    """Base of every error the shared core raises on purpose."""


class ConfigError(VitalvagtError):
    """A setting is missing or wrong; the message names the setting and what to do."""
