"""Writes the KServe v2 contract the gateway serves as a FileDescriptorSet (a Buf image).

The gateway's Open Inference Protocol is built on tritonclient's generated code (``service_pb2``), which
ships without its ``.proto`` files; this takes the same contract from those modules, so every generated
client speaks exactly what the gateway serves. Usage: ``python scripts/kserve_descriptor.py OUT``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2


def json_name(field: str) -> str:
    """The JSON name protoc gives a field (``raw_input_contents`` -> ``rawInputContents``)."""
    parts = field.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def _name_fields(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.json_name = json_name(field.name)
        _name_fields(message.nested_type)


def descriptor_set() -> bytes:
    """``model_config.proto`` then ``grpc_service.proto`` (dependencies first), serialised deterministically.

    Generated Python modules keep no JSON names; they are filled in as protoc does for its plugins.
    """
    files = descriptor_pb2.FileDescriptorSet()
    for module in (model_config_pb2, service_pb2):
        file = files.file.add()
        file.MergeFromString(module.DESCRIPTOR.serialized_pb)
        _name_fields(file.message_type)
    return files.SerializeToString(deterministic=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: kserve_descriptor.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(descriptor_set())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
