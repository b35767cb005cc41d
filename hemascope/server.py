"""Server scaffolding shared by every service: health, reflection, metrics, interceptor, lifecycle.

Each service's own ``create_server(settings)`` calls :func:`build_server` with its servicers and a model
loader. The server starts at once with health NOT_SERVING; the loader runs in a background thread and
health turns SERVING when it succeeds. If it fails, :meth:`ManagedServer.wait_ready` re-raises its error
so a command can stop with a clear message.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hemascope.admin import AdminInterceptor
from hemascope.errors import ConfigurationError, Unavailable
from hemascope.interceptors import ServiceInterceptor
from hemascope.logs import get_logger
from hemascope.settings import ServerSettings
from hemascope.telemetry import MetricsEndpoint, start_metrics_endpoint
from hemascope.tls import server_credentials
from hemascope.tracing import Tracing, setup_tracing

log = get_logger(__name__)


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name (for health and reflection) and how to register it."""

    name: str
    register: Callable[[grpc.Server], None]


@dataclass
class ManagedServer:
    """A started gRPC server with its health servicer, metrics endpoint and loader thread."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: Sequence[str]
    metrics: MetricsEndpoint | None = None
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    tracing: Tracing = field(default_factory=Tracing)
    """The server's tracing (off unless ``tracing_endpoint`` is set); shut down after ``on_stop``."""
    _ready: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _load_error: BaseException | None = None
    _stopped: bool = False
    _loaded: bool = False
    _faults: set[str] = field(default_factory=set)
    _status_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics else None

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set() and self._load_error is None and not self._stopped

    def set_fault(self, name: str, faulty: bool) -> None:
        """Marks a condition that makes the server unable to serve (e.g. its audit trail cannot be
        written): health is NOT_SERVING while any fault is set, and SERVING again once all are cleared
        (when the models are loaded)."""
        with self._status_lock:
            if faulty:
                self._faults.add(name)
            else:
                self._faults.discard(name)
            self._refresh_status()

    def _refresh_status(self) -> None:
        if self._stopped:
            return
        serving = self._loaded and not self._faults
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._set_status(status)

    def _set_status(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        self.health.set("", status)
        for name in self.service_names:
            self.health.set(name, status)

    def start_loading(self, load: Callable[[], None]) -> None:
        """Runs ``load`` in the background; health turns SERVING when it returns."""

        def run() -> None:
            try:
                load()
            except BaseException as exc:
                self._load_error = exc
                log.error("model_load_failed", error=str(exc))
            else:
                with self._status_lock:
                    self._loaded = True
                    self._refresh_status()
                if not self._stopped:
                    log.info("serving", port=self.port, services=list(self.service_names))
            finally:
                self._ready.set()

        threading.Thread(target=run, name="model-loader", daemon=True).start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Blocks until models are loaded; re-raises the loader's error; Unavailable on time-out."""
        if not self._ready.wait(timeout):
            raise Unavailable(f"models still loading after {timeout} s")
        if self._load_error is not None:
            raise self._load_error

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING first, then in-flight RPCs get ``grace`` seconds to finish."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        for callback in self.on_stop:
            callback()
        self.tracing.shutdown()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped", port=self.port)
        self._done.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Blocks until :meth:`stop` has finished (in-flight RPCs done, models closed)."""
        return self._done.wait(timeout)

    def install_signal_handlers(self, grace: float) -> None:
        """SIGTERM and SIGINT stop the server gracefully (call from the main thread)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal", signum=signum, grace_s=grace)
            threading.Thread(target=self.stop, args=(grace,), daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _metrics_endpoint(host: str, port: int | None) -> MetricsEndpoint | None:
    """The Prometheus endpoint, or None when disabled; a taken port is a ConfigurationError."""
    if port is None:
        return None
    try:
        return start_metrics_endpoint(host, port)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another with "
            "--metrics-port (0: any free port)",
            reason="PORT_IN_USE",
        ) from None


def build_server(
    settings: ServerSettings,
    bindings: Sequence[ServiceBinding],
    load: Callable[[], None],
    on_stop: Sequence[Callable[[], None]] = (),
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    admin_methods: Collection[str] = (),
    tracing: Tracing | None = None,
) -> tuple[ManagedServer, int]:
    """Creates, binds and starts a server for ``bindings``; returns it with the bound port.

    ``interceptors`` run before the kernel's ServiceInterceptor (e.g. authentication). The port speaks
    TLS (``add_secure_port``) with ``credentials``, or else with the settings' own TLS files
    (:func:`hemascope.tls.server_credentials`: mutual TLS when ``tls_client_ca_file`` is set), and plaintext
    without either. ``admin_methods`` (full method names) answer only the settings' ``admin_subjects``
    (:mod:`hemascope.admin`). ``tracing`` (the one the core's spans use; else one made from the settings)
    adds its server span per call outside every other interceptor, so audit records and logs of a call
    carry its trace id.
    """
    env_prefix = str(settings.model_config.get("env_prefix", "HEMASCOPE_"))
    if credentials is None:
        credentials = server_credentials(settings, env_prefix)
    if credentials is None:
        log.warning("tls_off", detail="no tls_cert_file: the port is plaintext")
    if admin_methods:
        admin = AdminInterceptor(admin_methods, settings.admin_subjects, env_prefix)
        interceptors = [admin, *interceptors]
    if tracing is None:
        service = env_prefix.removeprefix("HEMASCOPE_").rstrip("_").lower() or "hemascope"
        tracing = setup_tracing(settings.tracing_config(service))
    interceptors = [*tracing.server_interceptors(), *interceptors]
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=[*interceptors, ServiceInterceptor()],
        options=options,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [binding.name for binding in bindings]
    for binding in bindings:
        binding.register(server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError:
        port = 0
    if port == 0:
        tracing.shutdown()
        raise ConfigurationError(
            f"cannot listen on {address}: the port is in use (or the address is not this machine's); "
            "choose another with --port (0: any free port)",
            reason="PORT_IN_USE",
        )
    try:
        metrics = _metrics_endpoint(settings.host, settings.metrics_port)
    except ConfigurationError:
        server.stop(None)
        tracing.shutdown()
        raise
    managed = ManagedServer(server, port, health_servicer, names, metrics, list(on_stop), tracing)
    managed._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    server.start()
    managed.start_loading(load)
    return managed, port
