"""Who is calling: an API key's caller id, the subject of a verified client certificate, or nobody.

:class:`Identifier` turns a call's metadata, peer address and TLS auth context into a :class:`Caller`:

* an ``x-api-key`` that the :class:`~gateway.auth.ApiKeyStore` knows -> its caller id (source ``api-key``)
  and, when the key's record has the role ``admin``, :attr:`Caller.admin` (the only way to be an admin);
  a key it does not know is refused (UNAUTHENTICATED), whatever else the call presents;
* no key, keys not required, and a client certificate the gateway's mTLS port verified -> ``cert.<CN>``
  (source ``certificate``; the common name is cut to the caller id alphabet);
* otherwise, when keys are not required, ``anonymous``. With keys required a missing key is refused, even
  with a valid client certificate (both layers are checked).

Limits are per caller; anonymous callers cannot be told apart, so their limits are per connection
(:attr:`Caller.limit_key` includes the peer's address and port): one client holding streams open cannot
exhaust everyone else's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.auth import ANONYMOUS, API_KEY_HEADER, ApiKeyStore
from hemascope.errors import ConfigurationError, Unauthenticated
from hemascope.tls import peer_common_name

MISSING_MESSAGE = f"missing API key: send it in the '{API_KEY_HEADER}' metadata entry"
INVALID_MESSAGE = "invalid API key"
CERT_PREFIX = "cert."
_NOT_ID = re.compile(r"[^A-Za-z0-9._-]")

API_KEY = "api-key"
CERTIFICATE = "certificate"
NOBODY = "anonymous"


@dataclass(frozen=True)
class Caller:
    """An identified caller of one RPC."""

    id: str
    peer: str = ""
    source: str = NOBODY
    admin: bool = False
    """True only for an API key whose record has the role ``admin`` (administrative RPCs)."""

    @property
    def anonymous(self) -> bool:
        return self.source == NOBODY

    @property
    def limit_key(self) -> str:
        """What per-caller limits count by: the caller id, or the connection for anonymous callers."""
        return f"{ANONYMOUS}@{self.peer}" if self.anonymous else self.id


ANONYMOUS_CALLER = Caller(ANONYMOUS)


def certificate_caller_id(common_name: str) -> str:
    """``cert.<CN>`` in the caller id alphabet, at most 64 characters."""
    return (CERT_PREFIX + _NOT_ID.sub("_", common_name))[:64]


def metadata_value(metadata: Any, name: str) -> str | None:
    """The first value of metadata entry ``name`` (stripped), or None."""
    for entry_key, value in metadata or ():
        if entry_key == name:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None


class Identifier:
    """Resolves callers against an API key store (None: keys off)."""

    def __init__(self, store: ApiKeyStore | None, required: bool) -> None:
        if store is None and required:
            raise ConfigurationError(
                "API keys are required but no key file is set: set HEMASCOPE_GATEWAY_API_KEYS_FILE "
                "(create keys with `hemascope gateway add-key`) or HEMASCOPE_GATEWAY_REQUIRE_API_KEY=false"
            )
        self.store = store
        self.required = required

    def identify(self, metadata: Any, peer: str, auth_context: Mapping[str, Any]) -> Caller:
        """The caller; Unauthenticated for a wrong key, or a missing one when keys are required."""
        key = metadata_value(metadata, API_KEY_HEADER)
        if key is not None and self.store is not None:
            holder = self.store.holder_for(key)
            if holder is None:
                raise Unauthenticated(INVALID_MESSAGE)
            return Caller(holder.caller_id, peer, API_KEY, admin=holder.admin)
        if self.required:
            raise Unauthenticated(MISSING_MESSAGE)
        subject = peer_common_name(auth_context)
        if subject is not None:
            return Caller(certificate_caller_id(subject), peer, CERTIFICATE)
        return Caller(ANONYMOUS, peer, NOBODY)
