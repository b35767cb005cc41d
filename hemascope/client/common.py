"""What the sync and asyncio clients share: TLS settings, channel options, request building, results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hemascope.client.errors import HemascopeClientError
from hemascope.v1 import analysis_pb2, common_pb2

API_KEY_HEADER = "x-api-key"
DEFAULT_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ImageSource = bytes | bytearray | memoryview | Path | str
_OPTION_FIELDS = frozenset(field.name for field in analysis_pb2.AnalyzeOptions.DESCRIPTOR.fields)


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the gateway: ``ca`` to trust (None: the system's roots); ``cert``/``key`` when the gateway
    requires client certificates (mTLS); ``server_name`` to check in the gateway's certificate when it
    differs from the address's host (e.g. connecting by IP)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TlsConfig: give both cert and key (mutual TLS) or neither")
        root = Path(self.ca).read_bytes() if self.ca is not None else None
        if self.cert is None or self.key is None:
            return grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=Path(self.key).read_bytes(),
            certificate_chain=Path(self.cert).read_bytes(),
        )


def channel_options(tls: TlsConfig | None) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...] | None:
    return ((API_KEY_HEADER, api_key),) if api_key else None


def read_image(image: ImageSource) -> tuple[bytes, str]:
    """The encoded bytes of ``image`` and a default image id (the file name for paths, else "")."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), ""
    path = Path(image)
    return path.read_bytes(), path.name


def analyze_options(
    options: analysis_pb2.AnalyzeOptions | None, **fields: Any
) -> analysis_pb2.AnalyzeOptions:
    """``AnalyzeOptions`` from keyword fields (``detect=True, models=["svm"]``) over an optional base."""
    unknown = sorted(set(fields) - _OPTION_FIELDS)
    if unknown:
        raise TypeError(f"unknown analysis option(s) {unknown}; known: {sorted(_OPTION_FIELDS)}")
    result = analysis_pb2.AnalyzeOptions()
    if options is not None:
        result.CopyFrom(options)
    for name, value in fields.items():
        if name == "models":
            del result.models[:]
            result.models.extend(value)
        else:
            setattr(result, name, value)
    return result


def analyze_request(
    image: ImageSource,
    options: analysis_pb2.AnalyzeOptions | None,
    image_id: str | None,
    media_type: str,
    fields: dict[str, Any],
) -> analysis_pb2.AnalyzeRequest:
    data, default_id = read_image(image)
    proto_image = common_pb2.Image(
        data=data, image_id=default_id if image_id is None else image_id, media_type=media_type
    )
    return analysis_pb2.AnalyzeRequest(image=proto_image, options=analyze_options(options, **fields))


@dataclass(frozen=True)
class StreamResult:
    """One answer of ``analyze_many``: the input's position, its request id, and the report or the error
    (a request that failed as a whole, e.g. an unreadable image; the stream goes on)."""

    index: int
    request_id: str
    response: analysis_pb2.AnalyzeResponse | None
    error: HemascopeClientError | None

    @property
    def ok(self) -> bool:
        return self.error is None
