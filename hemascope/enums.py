"""Names of protobuf enum values that may come from a newer peer.

Proto3 enums are open: a message from a service built with a newer contract may carry a value this build
does not define, and ``EnumTypeWrapper.Name`` raises ValueError for it. Readers of another service's
messages name such a value ``UNKNOWN_<n>`` instead, which every caller treats as "not the value that lets
the answer through" (an unknown input-check kind is referred like any kind that is not a single cell).
"""

from __future__ import annotations

from typing import Any


def enum_name(enum: Any, value: int) -> str:
    """``enum.Name(value)``, or ``UNKNOWN_<value>`` when this build does not define the value."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return f"UNKNOWN_{value}"
