"""Checks of the public functions' options at the boundary.

Owns the rule that a wrong option fails at once, naming the option and what it
accepts, with linkmix's own ``ArgumentError`` — never later, deep inside a fit,
and never silently accepted (``REML="yes"``, ``n_starts=2.5``).
"""

from __future__ import annotations

import math
import numbers

from .errors import ArgumentError

__all__ = ["flag", "optional_flag", "count", "choice", "fraction"]


def flag(value, name: str) -> bool:
    """``value`` as a bool; only True or False (numpy's included) are accepted."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ArgumentError(f"{name} must be True or False, not {value!r}")


def optional_flag(value, name: str) -> bool | None:
    """``flag``, or None."""
    return None if value is None else flag(value, name)


def count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; floats and bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be a whole number, not {value!r}")
    if value < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, not {value}")
    return int(value)


def choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                            f"not {value!r}")
    return value


def fraction(value, name: str) -> float:
    """``value`` as a float strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not (math.isfinite(value) and 0 < value < 1):
        raise ArgumentError(f"{name} must be a number between 0 and 1, not {value!r}")
    return float(value)
