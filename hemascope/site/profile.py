"""Site profiles: what ``hemascope site adapt`` refits of a bundle on one laboratory's labelled cells.

A profile is one ``.npz`` file of plain arrays, read with ``allow_pickle=False`` (loading it never runs
code). Its ``meta`` entry is a JSON document (UTF-8 text held in a numpy string array); the other entries
are float arrays. Per model of the bundle it holds:

- ``adapter``: ``none``, ``shift`` or ``standardise``: an affine map of the bundle-scaled embedding,
  ``scaled' = scaled * adapter_<kind>_scale + adapter_<kind>_offset`` (the site's class-balanced mean moved to
  the training mean, and for ``standardise`` its spread to the training spread);
- ``temperature`` and ``bias``: ``p' = softmax(log p / temperature + bias)`` on the bundle's calibrated
  probabilities (temperature 1 and zero bias leave them unchanged);
- ``abstain_threshold`` and ``ood_threshold``: the referral thresholds, chosen on the site's cells;
- ``keep_myeloblast_calls``: where the bundle alone calls a cell myeloblast and the corrected model would
  not, the bundle's own probabilities answer for that cell, so the profile never withdraws a myeloblast call
  (on any cells, not only the site's: myeloblast sensitivity can never fall below the bundle's);

and, when the bundle has an out-of-distribution model, the site's own OOD reference (``ood_*`` arrays, the
layout of :class:`hemascope.bundle.OodModel`) fitted on the site's adapted cells.

A profile names the bundle version, backbone weights hash and classes it was made for; applying it to any
other bundle raises :class:`ProfileMismatch` (FAILED_PRECONDITION).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle, Manifest, OodModel, softmax
from hemascope.errors import FailedPrecondition, InvalidArgument

FloatArray = NDArray[np.float64]
FORMAT = "hemascope-site-profile"
FORMAT_VERSION = 1
SUFFIX = ".npz"
AdapterKind = Literal["none", "shift", "standardise"]
ADAPTERS: tuple[AdapterKind, ...] = ("none", "shift", "standardise")
_OOD_ARRAYS = ("mean", "components", "class_means", "precision")
MYELOBLAST = "myeloblast"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ProfileError(FailedPrecondition):
    """A profile file is unreadable or malformed."""

    default_reason = "BAD_SITE_PROFILE"


class ProfileMismatch(FailedPrecondition):
    """A profile was made for another bundle (version, backbone weights or classes)."""

    default_reason = "SITE_PROFILE_BUNDLE_MISMATCH"


def check_name(name: str) -> str:
    """A profile name is a file stem: letters, digits, ``.``, ``_``, ``-`` (at most 64, no path)."""
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(
            "a site profile name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            reason="BAD_SITE_PROFILE_NAME",
            field="site_profile",
        )
    return name


def keep_calls(base: FloatArray, corrected: FloatArray, cls: int) -> FloatArray:
    """``corrected`` where it calls ``cls`` whenever ``base`` does; elsewhere the rows of ``base``."""
    withdrawn = (base.argmax(axis=1) == cls) & (corrected.argmax(axis=1) != cls)
    if not withdrawn.any():
        return corrected
    out = corrected.copy()
    out[withdrawn] = base[withdrawn]
    return out


@dataclass(frozen=True)
class BundleRef:
    """The bundle a profile was made for."""

    version: str
    backbone: str
    weights_hash: str
    preprocessing: str
    classes: tuple[str, ...]
    dimension: int

    @staticmethod
    def of(manifest: Manifest) -> BundleRef:
        return BundleRef(
            manifest.bundle_version,
            manifest.backbone,
            manifest.weights_hash,
            manifest.preprocessing,
            tuple(manifest.classes),
            manifest.dimension,
        )


@dataclass(frozen=True)
class ModelCorrection:
    """What the profile changes for one model."""

    adapter: AdapterKind = "none"
    temperature: float = 1.0
    bias: tuple[float, ...] = ()
    abstain_threshold: float = 0.0
    ood_threshold: float = 0.0
    keep_myeloblast_calls: bool = True

    def calibrate(self, probs: FloatArray) -> FloatArray:
        """``softmax(log p / temperature + bias)``; the identity at temperature 1 and zero bias."""
        bias = np.asarray(self.bias, dtype=np.float64) if self.bias else 0.0
        if self.temperature == 1.0 and not np.any(bias):
            return probs
        return softmax(np.log(np.clip(probs, 1e-12, 1.0)) / self.temperature + bias)


@dataclass(frozen=True)
class SiteProfile:
    site: str
    bundle: BundleRef
    models: Mapping[str, ModelCorrection]
    #: adapter kind -> (scale, offset), each (dimension,), for the kinds some model uses
    adapters: Mapping[str, tuple[FloatArray, FloatArray]] = field(default_factory=dict)
    ood: OodModel | None = None
    #: what adaptation measured (cells, folds, cross-validated figures before and after); informative only
    summary: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""

    # applying -------------------------------------------------------------------------------------------
    def check_bundle(self, manifest: Manifest, name: str = "") -> None:
        """Raises :class:`ProfileMismatch` unless the profile was made for this bundle."""
        made_for = self.bundle
        served = BundleRef.of(manifest)
        what = f"site profile {name!r}" if name else "the site profile"
        if made_for != served:
            raise ProfileMismatch(
                f"{what} was made for bundle {made_for.version} ({made_for.backbone} "
                f"{made_for.weights_hash[:12]}); this is bundle {served.version} ({served.backbone} "
                f"{served.weights_hash[:12]}): adapt the site again on this bundle",
                field="site_profile",
            )
        missing = sorted(set(manifest.models) - set(self.models))
        if missing:
            raise ProfileMismatch(f"{what} has no correction for model(s) {missing}", field="site_profile")

    def adapt(self, model: str, scaled: FloatArray) -> FloatArray:
        """The bundle-scaled embeddings as ``model`` sees them at this site."""
        kind = self.models[model].adapter
        if kind == "none":
            return scaled
        scale, offset = self.adapters[kind]
        out: FloatArray = scaled * scale + offset
        return out

    def proba(self, bundle: LoadedBundle, model: str, scaled: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(adapted embeddings, site probabilities) of ``model`` for bundle-scaled embeddings."""
        correction = self.models[model]
        adapted = self.adapt(model, scaled)
        probs = correction.calibrate(bundle.models[model].proba(adapted))
        if correction.keep_myeloblast_calls and MYELOBLAST in self.bundle.classes:
            probs = keep_calls(
                bundle.models[model].proba(scaled), probs, self.bundle.classes.index(MYELOBLAST)
            )
        return adapted, probs

    def ood_scores(self, scaled: FloatArray, labels: NDArray[np.integer[Any]]) -> FloatArray | None:
        return None if self.ood is None else self.ood.score(scaled, labels)

    def referral(
        self, bundle: LoadedBundle, model: str, scaled: FloatArray, probs: FloatArray
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """Low-confidence and out-of-distribution flags with the site's thresholds and OOD reference (the
        bundle's OOD model when the profile has none), as the classifier service sets them."""
        correction = self.models[model]
        low = probs.max(axis=1) < correction.abstain_threshold
        scorer = self.ood if self.ood is not None else bundle.ood
        if correction.ood_threshold <= 0 or scorer is None:
            return low, np.zeros(len(probs), dtype=np.bool_)
        return low, scorer.score(scaled, probs.argmax(axis=1)) > correction.ood_threshold

    # storage --------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "site": self.site,
            "created": self.created,
            "bundle": {**asdict(self.bundle), "classes": list(self.bundle.classes)},
            "models": {name: {**asdict(m), "bias": list(m.bias)} for name, m in self.models.items()},
            "adapters": sorted(self.adapters),
            "ood": self.ood is not None,
            "summary": dict(self.summary),
        }

    def save(self, path: Path) -> Path:
        """Writes the profile to ``path`` (``.npz`` added when missing) atomically; returns the path."""
        if path.suffix != SUFFIX:
            path = path.with_name(path.name + SUFFIX)
        arrays: dict[str, NDArray[Any]] = {"meta": np.array(json.dumps(self.meta(), sort_keys=True))}
        for kind, (scale, offset) in self.adapters.items():
            arrays[f"adapter_{kind}_scale"] = np.asarray(scale, dtype=np.float64)
            arrays[f"adapter_{kind}_offset"] = np.asarray(offset, dtype=np.float64)
        if self.ood is not None:
            for name in _OOD_ARRAYS:
                arrays[f"ood_{name}"] = getattr(self.ood, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.tmp")
        with staging.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        staging.replace(path)
        return path

    @staticmethod
    def load(path: Path) -> SiteProfile:
        """Reads a profile without unpickling anything; :class:`ProfileError` naming what is wrong."""
        try:
            with np.load(path, allow_pickle=False) as data:
                raw = {name: np.asarray(data[name]) for name in data.files}
        except Exception as exc:
            raise ProfileError(f"cannot read site profile {path.name}: {type(exc).__name__}: {exc}") from exc
        try:
            return _from_arrays(raw)
        except ProfileError as exc:
            raise ProfileError(f"site profile {path.name}: {exc.message}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(
                f"site profile {path.name} is malformed: {type(exc).__name__}: {exc}"
            ) from None


def _finite(values: FloatArray, what: str, shape: tuple[int, ...]) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape or not np.isfinite(array).all():
        raise ProfileError(f"{what} must be {shape} finite values; found shape {array.shape}")
    return array


def _correction(raw: Mapping[str, Any], n_classes: int) -> ModelCorrection:
    correction = ModelCorrection(
        adapter=raw["adapter"],
        temperature=float(raw["temperature"]),
        bias=tuple(float(b) for b in raw["bias"]),
        abstain_threshold=float(raw["abstain_threshold"]),
        ood_threshold=float(raw["ood_threshold"]),
        keep_myeloblast_calls=bool(raw.get("keep_myeloblast_calls", True)),
    )
    if correction.adapter not in ADAPTERS:
        raise ProfileError(f"unknown adapter {correction.adapter!r}; expected one of {ADAPTERS}")
    if not (0.01 <= correction.temperature <= 100.0):
        raise ProfileError(f"temperature {correction.temperature} is outside [0.01, 100]")
    if len(correction.bias) not in (0, n_classes):
        raise ProfileError(f"bias has {len(correction.bias)} values for {n_classes} classes")
    numbers = [*correction.bias, correction.abstain_threshold, correction.ood_threshold]
    if not all(np.isfinite(numbers)):
        raise ProfileError("bias and thresholds must be finite")
    return correction


def _from_arrays(raw: Mapping[str, NDArray[Any]]) -> SiteProfile:
    meta = json.loads(str(raw["meta"]))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ProfileError(
            f"not a site profile of format {FORMAT} v{FORMAT_VERSION} (found {meta.get('format')!r} "
            f"v{meta.get('format_version')!r})"
        )
    bundle_raw = meta["bundle"]
    bundle = BundleRef(**{**bundle_raw, "classes": tuple(bundle_raw["classes"])})
    n, dim = len(bundle.classes), int(bundle.dimension)
    models = {str(name): _correction(entry, n) for name, entry in meta["models"].items()}
    adapters: dict[str, tuple[FloatArray, FloatArray]] = {}
    for kind in {m.adapter for m in models.values()} - {"none"}:
        adapters[kind] = (
            _finite(raw[f"adapter_{kind}_scale"], f"adapter {kind} scale", (dim,)),
            _finite(raw[f"adapter_{kind}_offset"], f"adapter {kind} offset", (dim,)),
        )
    ood = None
    if meta.get("ood"):
        arrays = {name: np.asarray(raw[f"ood_{name}"], dtype=np.float64) for name in _OOD_ARRAYS}
        k = arrays["components"].shape[0] if arrays["components"].ndim == 2 else 0
        expected = {"mean": (dim,), "components": (k, dim), "class_means": (n, k), "precision": (k, k)}
        ood = OodModel(**{name: _finite(arrays[name], f"ood {name}", expected[name]) for name in _OOD_ARRAYS})
        if k < 1:
            raise ProfileError("the OOD reference has no components")
    return SiteProfile(
        site=str(meta.get("site", "")),
        bundle=bundle,
        models=models,
        adapters=adapters,
        ood=ood,
        summary=meta.get("summary", {}),
        created=str(meta.get("created", "")),
    )
