"""Polls the served bundle's manifest and reloads when it changes (``watch_interval_s`` > 0)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from hemascope.bundle import MANIFEST, BundleError
from hemascope.logs import get_logger

if TYPE_CHECKING:
    from services.classifier.core import ClassifierCore

log = get_logger(__name__)


def manifest_fingerprint(root: Path) -> str | None:
    """SHA-256 of ``root/manifest.json``, or None while there is none (e.g. mid-replacement)."""
    try:
        return hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


class BundleWatcher:
    """A daemon thread that reloads the core's bundle when its manifest's content changes.

    The manifest lists a SHA-256 per file, so any change of the bundle changes the manifest. A missing
    manifest (a directory being replaced) is waited out. A manifest that failed to load is not retried until
    it changes again, so a bad bundle costs one error, not one per poll; the old bundle keeps serving.
    """

    def __init__(self, core: ClassifierCore, interval_s: float) -> None:
        self.core = core
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._failed: str | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def check(self) -> bool:
        """One poll; True when a new bundle was swapped in."""
        root = self.core.current_root()
        if root is None:
            return False
        fingerprint = manifest_fingerprint(root)
        if fingerprint is None or fingerprint in (self.core.served.fingerprint, self._failed):
            return False
        try:
            self.core.reload(root)
        except BundleError:
            self._failed = fingerprint  # logged by the core; retried when the manifest changes again
            return False
        self._failed = None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # keep watching whatever happens
                log.error("bundle_watch_failed", error=f"{type(exc).__name__}: {exc}")
