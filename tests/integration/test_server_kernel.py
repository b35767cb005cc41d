"""Integration tests for the shared server kernel: hemascope.server.build_server and ServiceInterceptor.

A tiny generic service (raw bytes in and out, no protobuf messages) runs on a real gRPC server on
127.0.0.1 port 0, with its metrics endpoint on port 0. The tests go through real channels: health,
reflection, error mapping, metrics, message limits and graceful stop.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from hemascope.errors import InvalidImage, NotFound
from hemascope.interceptors import INTERNAL_MESSAGE
from hemascope.server import ServiceBinding, build_server
from hemascope.settings import ServerSettings
from hemascope.v1 import common_pb2

SERVICE = "test.v1.KernelTestService"
ECHO = f"/{SERVICE}/Echo"
FAIL = f"/{SERVICE}/Fail"
SLOW = f"/{SERVICE}/Slow"
WAIT = 10.0  # generous bound for things that should happen at once
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class KernelTestService:
    """Handlers of the test service. ``Fail`` raises what its request names."""

    def __init__(self) -> None:
        self.slow_started = threading.Event()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"invalid":
            raise InvalidImage("msg", reason="CORRUPT_IMAGE", field="image")
        if request == b"notfound":
            raise NotFound("no such thing")
        if request == b"internal":
            raise RuntimeError("secret traceback text")
        if request == b"abort":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "x")
        if request == b"setcode":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            raise RuntimeError("secret after set_code")
        return b"no failure requested"

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.slow_started.set()
        time.sleep(0.5)
        return b"slow done:" + request

    def binding(self) -> ServiceBinding:
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            },
        )
        return ServiceBinding(SERVICE, register=lambda server: server.add_generic_rpc_handlers((handler,)))


class Harness:
    """One started server with a channel to it; stopped and closed by the fixture."""

    def __init__(
        self,
        load: Callable[[], None] = lambda: None,
        on_stop: tuple[Callable[[], None], ...] = (),
        **settings: Any,
    ) -> None:
        self.service = KernelTestService()
        self.server, self.port = build_server(
            ServerSettings(port=0, metrics_port=0, **settings), [self.service.binding()], load, on_stop
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def call(self, method: str, request: bytes = b"", timeout: float = WAIT) -> bytes:
        result: bytes = self.channel.unary_unary(method)(request, timeout=timeout)
        return result

    def fails_with(self, method: str, request: bytes = b"") -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            self.call(method, request)
        return info.value

    def health(self, service: str = "") -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
        return int(response.status)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(**kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def ready(harness: Callable[..., Harness]) -> Harness:
    h = harness()
    h.server.wait_ready(WAIT)
    return h


def poll(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def requests_total(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("hemascope_rpc_requests_total", {"method": method, "code": code})
    return 0.0 if value is None else value


# ----------------------------------------------------------------------------------------------------------
# Health and loading
# ----------------------------------------------------------------------------------------------------------


def test_health_is_not_serving_until_the_loader_returns(harness: Callable[..., Harness]) -> None:
    release = threading.Event()

    def load() -> None:
        release.wait(WAIT)

    h = harness(load=load)

    assert h.health("") == NOT_SERVING
    assert h.health(SERVICE) == NOT_SERVING
    assert not h.server.is_ready
    # the service itself already answers while loading (it is up to each servicer to refuse)
    assert h.call(ECHO, b"early") == b"early"

    release.set()
    h.server.wait_ready(WAIT)
    poll(lambda: h.health("") == SERVING and h.health(SERVICE) == SERVING)
    assert h.server.is_ready


def test_loader_failure_is_reraised_and_health_stays_not_serving(harness: Callable[..., Harness]) -> None:
    class LoadFailed(Exception):
        pass

    def load() -> None:
        raise LoadFailed("weights are missing")

    h = harness(load=load)
    with pytest.raises(LoadFailed, match="weights are missing"):
        h.server.wait_ready(WAIT)
    assert not h.server.is_ready
    assert h.health("") == NOT_SERVING
    assert h.health(SERVICE) == NOT_SERVING


def test_unknown_health_service_is_not_found(ready: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        ready.health("no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_service(ready: Harness) -> None:
    services = ProtoReflectionDescriptorDatabase(ready.channel).get_services()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services


# ----------------------------------------------------------------------------------------------------------
# Error mapping
# ----------------------------------------------------------------------------------------------------------


def test_domain_error_becomes_status_with_error_detail(ready: Harness) -> None:
    err = ready.fails_with(FAIL, b"invalid")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "msg"

    status = rpc_status.from_call(err)
    assert status is not None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(status.details) == 1
    detail = common_pb2.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert detail.reason == "CORRUPT_IMAGE"
    assert detail.code == 3
    assert detail.message == "msg"
    assert detail.field == "image"

    assert ready.call(ECHO, b"still here") == b"still here"


def test_not_found_maps_to_not_found(ready: Harness) -> None:
    err = ready.fails_with(FAIL, b"notfound")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "no such thing"
    status = rpc_status.from_call(err)
    assert status is not None
    detail = common_pb2.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert detail.reason == "NOT_FOUND"
    assert ready.call(ECHO, b"still here") == b"still here"


def test_unexpected_error_is_internal_without_leaking_details(
    ready: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # structlog may be unconfigured here (events go to its own processors) or routed through stdlib
    # logging by configure_logging() (events reach caplog as dicts); look in both places.
    with caplog.at_level(logging.INFO), structlog.testing.capture_logs() as captured:
        err = ready.fails_with(FAIL, b"internal")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == INTERNAL_MESSAGE
    assert "secret" not in (err.details() or "")
    status = rpc_status.from_call(err)
    assert status is None or all("secret" not in str(detail) for detail in status.details)
    assert all("secret" not in str(value) for _, value in err.trailing_metadata() or ())

    events = list(captured) + [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    internal = [event for event in events if event.get("event") == "rpc_internal_error"]
    assert internal, f"the internal error was not logged: {events}"
    assert internal[0]["method"] == FAIL
    logged = internal[0].get("exc_info")
    assert isinstance(logged, RuntimeError)
    assert str(logged) == "secret traceback text"

    assert ready.call(ECHO, b"still here") == b"still here"


def test_handler_abort_keeps_its_status(ready: Harness) -> None:
    err = ready.fails_with(FAIL, b"abort")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "x"
    assert ready.call(ECHO, b"still here") == b"still here"


def test_set_code_then_raise_keeps_the_code_and_hides_the_exception(ready: Harness) -> None:
    err = ready.fails_with(FAIL, b"setcode")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "secret" not in str(err.details())
    assert "Exception calling application" not in str(err.details())


def test_server_keeps_serving_concurrent_mixed_calls(ready: Harness) -> None:
    def one(i: int) -> grpc.StatusCode:
        request = (b"internal", b"invalid", b"notfound", b"abort", b"ok")[i % 5]
        try:
            ready.call(FAIL, request)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(one, range(40)))
    expected = [
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OK,
    ]
    assert codes == [expected[i % 5] for i in range(40)]


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_counts_rpcs_by_method_and_code(ready: Harness) -> None:
    assert ready.server.metrics_port
    ok_before = requests_total(ECHO, "OK")
    invalid_before = requests_total(FAIL, "INVALID_ARGUMENT")
    internal_before = requests_total(FAIL, "INTERNAL")

    for _ in range(3):
        ready.call(ECHO, b"count me")
    ready.fails_with(FAIL, b"invalid")
    ready.fails_with(FAIL, b"internal")

    samples = scrape(ready.server.metrics_port)
    key = "hemascope_rpc_requests_total"
    assert samples[(key, (("code", "OK"), ("method", ECHO)))] == ok_before + 3
    assert samples[(key, (("code", "INVALID_ARGUMENT"), ("method", FAIL)))] == invalid_before + 1
    assert samples[(key, (("code", "INTERNAL"), ("method", FAIL)))] == internal_before + 1
    assert ("hemascope_rpc_latency_seconds_count", (("method", ECHO),)) in samples
    assert samples[("hemascope_rpc_in_flight", (("method", ECHO),))] == 0


# ----------------------------------------------------------------------------------------------------------
# Limits and lifecycle
# ----------------------------------------------------------------------------------------------------------


def test_oversized_message_is_resource_exhausted(harness: Callable[..., Harness]) -> None:
    h = harness(max_message_bytes=64 * 1024)
    h.server.wait_ready(WAIT)
    err = h.fails_with(ECHO, b"\0" * (200 * 1024))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert h.call(ECHO, b"small") == b"small"
    assert h.call(ECHO, b"\1" * (32 * 1024)) == b"\1" * (32 * 1024)


def test_graceful_stop_lets_in_flight_calls_finish(harness: Callable[..., Harness]) -> None:
    stopped = threading.Event()
    h = harness(on_stop=(stopped.set,))
    h.server.wait_ready(WAIT)
    metrics_port = h.server.metrics_port
    assert metrics_port

    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(h.call, SLOW, b"payload")
        assert h.service.slow_started.wait(WAIT)
        h.server.stop(grace=5)  # blocks until the slow call is done
        assert in_flight.result(WAIT) == b"slow done:payload"

    assert stopped.is_set()
    assert h.server.wait_for_termination(timeout=WAIT) is True
    err = h.fails_with(ECHO, b"too late")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as fresh, pytest.raises(grpc.RpcError) as info:
        fresh.unary_unary(ECHO)(b"too late", timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(urllib.error.URLError):  # the metrics endpoint is closed as well
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT)
    h.server.stop(0)  # a second stop is a no-op


def test_wait_for_termination_times_out_while_running(ready: Harness) -> None:
    assert ready.server.wait_for_termination(timeout=0.05) is False


# ----------------------------------------------------------------------------------------------------------
# Connection age (clients re-resolve and spread over new replicas)
# ----------------------------------------------------------------------------------------------------------


def _states_after_a_call(h: Harness, seconds: float) -> list[grpc.ChannelConnectivity]:
    states: list[grpc.ChannelConnectivity] = []
    h.channel.subscribe(states.append, try_to_connect=True)
    assert h.health() == health_pb2.HealthCheckResponse.SERVING
    time.sleep(seconds)
    h.channel.unsubscribe(states.append)
    return states


def test_connections_are_closed_after_their_maximum_age(harness: Callable[..., Harness]) -> None:
    h = harness(max_connection_age_s=0.3, max_connection_age_grace_s=0.1)
    h.server.wait_ready(WAIT)
    states = _states_after_a_call(h, 1.5)
    ready = states.index(grpc.ChannelConnectivity.READY)
    assert grpc.ChannelConnectivity.IDLE in states[ready:]  # the server's GOAWAY closed the connection
    assert h.health() == health_pb2.HealthCheckResponse.SERVING  # and the client reconnects


def test_no_maximum_age_keeps_the_connection(harness: Callable[..., Harness]) -> None:
    h = harness(max_connection_age_s=0)
    h.server.wait_ready(WAIT)
    states = _states_after_a_call(h, 1.5)
    ready = states.index(grpc.ChannelConnectivity.READY)
    assert grpc.ChannelConnectivity.IDLE not in states[ready:]


# ----------------------------------------------------------------------------------------------------------
# Ports that are taken
# ----------------------------------------------------------------------------------------------------------


def test_a_taken_port_is_a_configuration_error_naming_the_port() -> None:
    import socket

    from hemascope.errors import ConfigurationError

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{taken}.*--port") as info:
            build_server(ServerSettings(port=taken, metrics_port=None), [], lambda: None)
        assert info.value.reason == "PORT_IN_USE"
        with pytest.raises(ConfigurationError, match=f"metrics on 127.0.0.1:{taken}.*--metrics-port"):
            build_server(ServerSettings(port=0, metrics_port=taken), [], lambda: None)
