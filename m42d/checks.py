"""Value checks shared by the configuration and the limits it carries; no I/O.

A check takes the full key name (for the message) and the raw value and
returns the value, or raises :class:`~m42d.errors.ConfigError`.  One
function per rule means a value built in code and one read from TOML are
held to exactly the same rule and produce the same sentence, naming the key
(``limits.join_timeout must be a positive number``), never a secret value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from m42d.errors import ConfigError

__all__ = ["Check", "boolean", "checked", "checks_of", "positive_int", "positive_number"]

Check: TypeAlias = Callable[[str, Any], Any]


def positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer")
    return value


def positive_number(key: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{key} must be a positive number")
    return float(value)


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _validator(check: Check) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(attribute.name, value)

    return validate


def checked(default: Any, check: Check, **kwargs: Any) -> Any:
    """An attrs field validated by ``check``, which the TOML loader finds in its metadata."""
    return attrs.field(
        default=default, validator=_validator(check), metadata={"check": check}, **kwargs
    )


def checks_of(cls: type[Any]) -> dict[str, Check]:
    """Field name -> check, for every checked field of an attrs class."""
    return {a.name: a.metadata["check"] for a in attrs.fields(cls) if "check" in a.metadata}
