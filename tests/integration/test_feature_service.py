"""The feature service end to end over real gRPC: real backbone export, real images, bad inputs."""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hemascope.imaging.decode import decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.preprocess import DEFAULT_PREPROCESSING, get_preprocessing
from hemascope.server import ManagedServer
from hemascope.v1 import common_pb2, feature_pb2, feature_pb2_grpc
from services.feature.server import create_server
from services.feature.settings import FeatureSettings
from tests.conftest import encode
from tests.grpc_helpers import error_reason, rpc_error

REDIS_DB = 15


DEFAULT_VERSION = get_preprocessing(DEFAULT_PREPROCESSING).version


def _start(settings: FeatureSettings) -> tuple[ManagedServer, int]:
    server, port = create_server(settings)
    server.wait_ready(180)
    return server, port


@pytest.fixture(scope="module")
def feature(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[int]:
    settings = FeatureSettings(
        port=0,
        metrics_port=None,
        model_cache_dir=model_cache_dir,
        max_message_bytes=2 * 1024 * 1024,
        max_image_bytes=1024 * 1024,
        max_batch_items=8,
        max_batch_bytes=1536 * 1024,
        log_json=False,
    )
    server, port = _start(settings)
    yield port
    server.stop(1)


@pytest.fixture
def stub(feature: int, channel_to: Callable[[int], grpc.Channel]) -> feature_pb2_grpc.FeatureServiceStub:
    return feature_pb2_grpc.FeatureServiceStub(channel_to(feature))


def _embed(stub: feature_pb2_grpc.FeatureServiceStub, data: bytes, **kw: object) -> feature_pb2.EmbedResponse:
    return stub.Embed(feature_pb2.EmbedRequest(image=common_pb2.Image(data=data), **kw), timeout=60)


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_embed_real_image_then_cache_hit(
    stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]
) -> None:
    data = real_images[0].read_bytes()
    first = _embed(stub, data, skip_cache=True)
    second = _embed(stub, data)
    emb = first.embedding
    assert (emb.dimension, emb.backbone, len(emb.values)) == (1280, "efficientnet_lite0_blood", 1280)
    assert len(emb.weights_hash) == 64 and emb.preprocessing == DEFAULT_VERSION
    assert not first.cache_hit and second.cache_hit
    assert np.array_equal(np.array(first.embedding.values), np.array(second.embedding.values))
    assert first.content_hash == content_hash(decode_image(data).pixels)
    assert np.isfinite(np.array(emb.values)).all() and np.linalg.norm(emb.values) > 0


def test_embeddings_differ_between_cell_types(
    stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]
) -> None:
    vectors = [np.array(_embed(stub, p.read_bytes()).embedding.values) for p in real_images]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = (np.array(vectors) / norms) @ (np.array(vectors) / norms).T
    assert cosine.min() < 0.95, "different cells should not collapse to one embedding"


def test_reencoded_pixels_hit_the_cache(stub: feature_pb2_grpc.FeatureServiceStub) -> None:
    pixels = np.random.default_rng(7).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    png = _embed(stub, encode(pixels, "PNG"))
    bmp = _embed(stub, encode(pixels, "BMP"))
    assert png.content_hash == bmp.content_hash and bmp.cache_hit
    assert (png.width, png.height) == (80, 64)


def test_batch_reports_per_item_errors(
    stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]
) -> None:
    good = real_images[1].read_bytes()
    images = [
        common_pb2.Image(data=good, image_id="a"),
        common_pb2.Image(data=b"", image_id="b"),
        common_pb2.Image(data=good[: len(good) // 2], image_id="c"),
        common_pb2.Image(data=real_images[2].read_bytes(), image_id="d"),
    ]
    response = stub.EmbedBatch(feature_pb2.EmbedBatchRequest(images=images), timeout=60)
    assert [r.image_id for r in response.results] == ["a", "b", "c", "d"]
    kinds = [r.WhichOneof("outcome") for r in response.results]
    assert kinds == ["result", "error", "error", "result"]
    assert response.results[1].error.reason == "EMPTY_IMAGE"
    assert response.results[2].error.reason == "CORRUPT_IMAGE"
    assert response.results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert response.results[0].result.embedding.dimension == 1280


def test_batch_limits(stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]) -> None:
    data = real_images[0].read_bytes()
    too_many = feature_pb2.EmbedBatchRequest(images=[common_pb2.Image(data=data)] * 9)
    error = rpc_error(lambda: stub.EmbedBatch(too_many, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "BATCH_TOO_LARGE"
    assert "limit is 8" in str(error.details())
    big = np.random.default_rng(1).integers(0, 255, (420, 420, 3), dtype=np.uint8)
    heavy = feature_pb2.EmbedBatchRequest(images=[common_pb2.Image(data=encode(big, "BMP"))] * 3)
    error = rpc_error(lambda: stub.EmbedBatch(heavy, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in str(error.details())


BAD_INPUTS: list[tuple[str, Callable[[bytes], bytes], grpc.StatusCode, str]] = [
    ("empty", lambda good: b"", grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_IMAGE"),
    (
        "truncated jpeg",
        lambda good: good[: len(good) // 2],
        grpc.StatusCode.INVALID_ARGUMENT,
        "CORRUPT_IMAGE",
    ),
    (
        "random bytes",
        lambda good: np.random.default_rng(3).bytes(5000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_FORMAT",
    ),
    (
        "png claiming 20000x20000",
        lambda good: _png_claiming(20000, 20000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TOO_MANY_PIXELS",
    ),
    (
        "over max_image_bytes",
        lambda good: good + b"\0" * (1024 * 1024),
        grpc.StatusCode.INVALID_ARGUMENT,
        "IMAGE_TOO_LARGE",
    ),
]


@pytest.mark.parametrize(("name", "make", "code", "reason"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_clear_status_and_server_keeps_serving(
    stub: feature_pb2_grpc.FeatureServiceStub,
    real_images: list[Path],
    name: str,
    make: Callable[[bytes], bytes],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    good = real_images[0].read_bytes()
    error = rpc_error(lambda: _embed(stub, make(good)))
    assert error.code() == code, error.details()
    assert error_reason(error) == reason
    assert error.details() and "Traceback" not in str(error.details())
    assert _embed(stub, good).embedding.dimension == 1280


def test_oversized_message_is_refused_by_transport(
    stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]
) -> None:
    error = rpc_error(lambda: _embed(stub, b"\xff\xd8" + b"\0" * (3 * 1024 * 1024)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _embed(stub, real_images[0].read_bytes()).embedding.dimension == 1280


def _tiff16(pixels: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels)
    return buffer.getvalue()


def _ramp(shape: tuple[int, ...], low: int, high: int, dtype: type) -> np.ndarray:
    """A left-to-right ramp (not a blank field, which the input check refuses)."""
    ramp = np.linspace(low, high, shape[1]).astype(dtype)
    return np.ascontiguousarray(np.broadcast_to(ramp.reshape(1, -1, *([1] * (len(shape) - 2))), shape))


ODD_BUT_VALID: list[tuple[str, Callable[[], bytes]]] = [
    ("grayscale png", lambda: encode(_ramp((50, 60), 0, 255, np.uint8), "PNG")),
    ("rgba png", lambda: encode(_ramp((50, 60, 4), 60, 255, np.uint8), "PNG")),
    ("16-bit gray tiff", lambda: _tiff16(_ramp((40, 30), 1000, 60000, np.uint16))),
    ("16-bit rgb tiff", lambda: _tiff16(_ramp((40, 30, 3), 1000, 60000, np.uint16))),
]


@pytest.mark.parametrize(("name", "make"), ODD_BUT_VALID, ids=[o[0] for o in ODD_BUT_VALID])
def test_odd_but_valid_images_embed(
    stub: feature_pb2_grpc.FeatureServiceStub, name: str, make: Callable[[], bytes]
) -> None:
    response = _embed(stub, make())
    assert response.embedding.dimension == 1280 and np.isfinite(response.embedding.values).all()


def test_a_blank_image_is_refused_and_others_carry_the_input_check(
    stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]
) -> None:
    error = rpc_error(lambda: _embed(stub, encode(np.full((50, 60, 3), 128, np.uint8), "PNG")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "BLANK_IMAGE"
    assert "blank" in str(error.details())
    check = _embed(stub, real_images[0].read_bytes()).embedding.input_check
    assert check.kind == common_pb2.INPUT_KIND_SINGLE_CELL and check.reason
    ramp = _embed(stub, encode(_ramp((50, 60), 0, 255, np.uint8), "PNG")).embedding.input_check
    assert ramp.kind == common_pb2.INPUT_KIND_NOT_A_CELL_IMAGE


def test_media_type_mismatch(stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]) -> None:
    request = feature_pb2.EmbedRequest(
        image=common_pb2.Image(data=real_images[0].read_bytes(), media_type="image/png")
    )
    error = rpc_error(lambda: stub.Embed(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "MEDIA_TYPE_MISMATCH"


def test_unknown_backbone_is_not_found(
    stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]
) -> None:
    error = rpc_error(lambda: _embed(stub, real_images[0].read_bytes(), backbone="vgg16"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and error_reason(error) == "UNKNOWN_BACKBONE"
    assert "efficientnet_lite0" in str(error.details())


def test_backbone_info(stub: feature_pb2_grpc.FeatureServiceStub) -> None:
    info = stub.GetBackboneInfo(feature_pb2.GetBackboneInfoRequest(), timeout=10)
    assert (info.backbone, info.dimension, info.input_size) == ("efficientnet_lite0_blood", 1280, 224)
    assert info.execution_providers[-1] == "CPUExecutionProvider"
    assert info.max_batch_items == 8 and info.max_image_bytes == 1024 * 1024
    assert list(info.mean) == pytest.approx([0.485, 0.456, 0.406])
    assert info.weights_source.endswith(".pth") and "/" not in info.weights_source


def test_call_without_deadline(stub: feature_pb2_grpc.FeatureServiceStub, real_images: list[Path]) -> None:
    image = common_pb2.Image(data=real_images[5].read_bytes())
    response = stub.Embed(feature_pb2.EmbedRequest(image=image, skip_cache=True))
    assert response.embedding.dimension == 1280
    batch = stub.EmbedBatch(feature_pb2.EmbedBatchRequest(images=[image], skip_cache=True))
    assert batch.results[0].result.embedding.dimension == 1280


def test_deadline_is_honoured(stub: feature_pb2_grpc.FeatureServiceStub) -> None:
    big = encode(np.random.default_rng(5).integers(0, 255, (900, 900, 3), dtype=np.uint8), "PNG")
    error = rpc_error(
        lambda: stub.Embed(feature_pb2.EmbedRequest(image=common_pb2.Image(data=big)), timeout=0.001)
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_is_serving(feature: int, channel_to: Callable[[int], grpc.Channel]) -> None:
    health = health_pb2_grpc.HealthStub(channel_to(feature))
    for service in ("", "hemascope.v1.FeatureService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# Redis ----------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"hemascope-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cache_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "cache.key"
    path.write_text("f" * 64)
    return path


def _redis_settings(
    model_cache_dir: Path, url: str, prefix: str, key_file: Path | None = None
) -> FeatureSettings:
    return FeatureSettings(
        port=0,
        metrics_port=None,
        model_cache_dir=model_cache_dir,
        redis_url=url,
        cache_prefix=prefix,
        cache_ttl_s=600,
        log_json=False,
        cache_key_file=key_file,
    )


def test_redis_cache_shared_between_service_instances(
    model_cache_dir: Path,
    redis_prefix: str,
    real_images: list[Path],
    channel_to: Callable[[int], grpc.Channel],
    cache_key_file: Path,
) -> None:
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    data = real_images[3].read_bytes()
    first, port1 = _start(_redis_settings(model_cache_dir, url, redis_prefix, cache_key_file))
    second, port2 = _start(_redis_settings(model_cache_dir, url, redis_prefix, cache_key_file))
    try:
        miss = _embed(feature_pb2_grpc.FeatureServiceStub(channel_to(port1)), data)
        hit = _embed(feature_pb2_grpc.FeatureServiceStub(channel_to(port2)), data)
        assert not miss.cache_hit and hit.cache_hit
        assert np.array_equal(miss.embedding.values, hit.embedding.values)
        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        keys = [k.decode() for k in client.scan_iter(f"{redis_prefix}*")]
        assert len(keys) == 1 and miss.content_hash in keys[0] and 0 < client.ttl(keys[0]) <= 600
        client.delete(*keys)  # the entry is gone (flushed or evicted): the next call is a miss, not an error
        client.close()
        again = _embed(feature_pb2_grpc.FeatureServiceStub(channel_to(port2)), data)
        assert not again.cache_hit and again.embedding.dimension == 1280
    finally:
        first.stop(0)
        second.stop(0)


def test_a_poisoned_cache_entry_is_a_miss_never_the_answer(
    model_cache_dir: Path,
    redis_prefix: str,
    real_images: list[Path],
    channel_to: Callable[[int], grpc.Channel],
    cache_key_file: Path,
) -> None:
    """A myeloblast image's cached embedding overwritten with a basophil's (a genuine cached value, or a
    bare vector) is refused: the service recomputes the myeloblast's own embedding."""
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    myeloblast, basophil = real_images[6].read_bytes(), real_images[0].read_bytes()
    server, port = _start(_redis_settings(model_cache_dir, url, redis_prefix, cache_key_file))
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        stub = feature_pb2_grpc.FeatureServiceStub(channel_to(port))
        own = _embed(stub, myeloblast)
        other = _embed(stub, basophil)
        keys = {k.decode() for k in client.scan_iter(f"{redis_prefix}*")}
        target = next(k for k in keys if own.content_hash in k)
        donor = next(k for k in keys if other.content_hash in k)
        stolen = client.get(donor)
        assert isinstance(stolen, bytes)
        bare = np.asarray(other.embedding.values, dtype="<f4").tobytes()
        for forged in (stolen, bare):
            client.set(target, forged)
            again = _embed(stub, myeloblast)
            assert not again.cache_hit
            assert np.array_equal(again.embedding.values, own.embedding.values)
    finally:
        client.close()
        server.stop(0)


def test_dead_redis_never_fails_a_request(
    model_cache_dir: Path, real_images: list[Path], channel_to: Callable[[int], grpc.Channel]
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    server, port = _start(_redis_settings(model_cache_dir, f"redis://127.0.0.1:{dead_port}/0", "dead:"))
    try:
        stub = feature_pb2_grpc.FeatureServiceStub(channel_to(port))
        for path in real_images[:3]:
            response = _embed(stub, path.read_bytes())
            assert response.embedding.dimension == 1280 and not response.cache_hit
    finally:
        server.stop(0)
