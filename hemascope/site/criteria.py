"""Acceptance criteria of a site validation: a YAML file read strictly, and its pass/fail verdicts.

A criterion names a metric, one limit (``min`` or ``max``) and, for metrics with an interval, which end of
the 95% interval is compared (``bound``: ``point``, the default, ``lower`` or ``upper``). ``min`` on the
lower bound is the cautious reading ("we are 95% confident sensitivity is at least this"). Example
(``configs/site/acceptance.yaml`` is the documented default)::

    models: supervised          # every model but k-means; or "all", or a list of model names
    target_sensitivity: 0.95    # the myeloblast sensitivity a suggested threshold must reach
    criteria:
      - {metric: cells_per_class, min: 30}
      - {metric: myeloblast_sensitivity, bound: lower, min: 0.90}
      - {metric: class_sensitivity, min: 0.80, classes: [myeloblast, seg_neutrophil]}
      - {metric: ece, max: 0.10}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from hemascope.errors import InvalidArgument

Bound = Literal["point", "lower", "upper"]
Op = Literal["min", "max"]
DATA = "(data)"


class CriteriaError(InvalidArgument):
    """The acceptance-criteria file is missing, unreadable or malformed, or does not fit the bundle."""

    default_reason = "BAD_CRITERIA"


@dataclass(frozen=True)
class MetricInfo:
    """Where a metric lives in a model's (or the data's) results and how it may be compared."""

    words: str
    path: tuple[str, ...]  # keys into the results; "{class}" is replaced per class
    per_class: bool = False
    interval: bool = True  # the value is an estimate with low/high (else a plain number)
    data: bool = False  # a property of the data, not of a model
    count: bool = False  # a whole number (no upper bound of 1)


METRICS: dict[str, MetricInfo] = {
    "cells_per_class": MetricInfo("cells", ("counts", "{class}"), True, False, True, True),
    "patients": MetricInfo("patients", ("patients",), interval=False, data=True, count=True),
    "myeloblast_sensitivity": MetricInfo("myeloblast sensitivity", ("myeloblast", "sensitivity")),
    "myeloblast_specificity": MetricInfo("myeloblast specificity", ("myeloblast", "specificity")),
    "myeloblast_auc": MetricInfo("myeloblast ROC-AUC", ("myeloblast", "auc")),
    "class_sensitivity": MetricInfo("sensitivity", ("per_class", "{class}", "sensitivity"), True),
    "class_specificity": MetricInfo("specificity", ("per_class", "{class}", "specificity"), True),
    "referral_rate": MetricInfo("referral rate", ("referral", "rate")),
    "accuracy": MetricInfo("accuracy, all cells", ("all", "accuracy")),
    "answered_accuracy": MetricInfo("accuracy, answered cells", ("answered", "accuracy")),
    "macro_f1": MetricInfo("macro-F1, all cells", ("all", "macro_f1"), interval=False),
    "answered_macro_f1": MetricInfo("macro-F1, answered cells", ("answered", "macro_f1"), interval=False),
    "ece": MetricInfo("ECE", ("calibration", "ece"), interval=False),
}
MODEL_SETS = ("supervised", "all")
DEFAULT_TARGET_SENSITIVITY = 0.95


@dataclass(frozen=True)
class Criterion:
    metric: str
    op: Op
    limit: float
    bound: Bound = "point"
    classes: tuple[str, ...] | None = None  # None: every class (per-class metrics)

    def words(self, cls: str | None = None) -> str:
        info = METRICS[self.metric]
        what = f"{cls} {info.words}" if cls else info.words
        if self.bound != "point":
            what += f" ({self.bound} 95% bound)"
        limit = f"{int(self.limit)}" if info.count else f"{self.limit:g}"
        return f"{what} {'>=' if self.op == 'min' else '<='} {limit}"


@dataclass(frozen=True)
class Criteria:
    criteria: tuple[Criterion, ...]
    models: str | tuple[str, ...] = "supervised"
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    source: str = ""

    def chosen_models(self, kinds: Mapping[str, str]) -> list[str]:
        """The bundle's models the criteria apply to (``kinds``: model name -> kind, in bundle order)."""
        if self.models == "all":
            return list(kinds)
        if self.models == "supervised":
            return [name for name, kind in kinds.items() if kind != "kmeans"]
        unknown = sorted(set(self.models) - set(kinds))
        if unknown:
            raise CriteriaError(
                f"criteria file {self.source}: models {unknown} are not in the bundle (it has {list(kinds)})"
            )
        return list(self.models)

    def check_classes(self, classes: Sequence[str]) -> None:
        for criterion in self.criteria:
            unknown = sorted(set(criterion.classes or ()) - set(classes))
            if unknown:
                raise CriteriaError(
                    f"criteria file {self.source}: {criterion.metric}: unknown classes {unknown}; the "
                    f"bundle's classes are {list(classes)}"
                )


def _fail(source: str, where: str, problem: str) -> CriteriaError:
    return CriteriaError(f"criteria file {source}: {where}: {problem}")


def _number(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(source, where, f"the limit must be a number, got {value!r}")
    return float(value)


def _criterion(entry: Any, index: int, source: str) -> Criterion:
    where = f"criteria[{index}]"
    if not isinstance(entry, Mapping):
        raise _fail(source, where, "each criterion is a mapping with 'metric' and 'min' or 'max'")
    unknown = sorted(set(entry) - {"metric", "min", "max", "bound", "classes"})
    if unknown:
        raise _fail(source, where, f"unknown keys {unknown}")
    metric = entry.get("metric")
    if metric not in METRICS:
        raise _fail(source, where, f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    info = METRICS[metric]
    where = f"{where} ({metric})"
    if ("min" in entry) == ("max" in entry):
        raise _fail(source, where, "give exactly one of 'min' or 'max'")
    op: Op = "min" if "min" in entry else "max"
    limit = _number(entry[op], source, where)
    if info.count and (limit < 0 or limit != int(limit)):
        raise _fail(source, where, f"the limit is a count: a whole number >= 0, got {entry[op]!r}")
    if not info.count and not 0 <= limit <= 1:
        raise _fail(source, where, f"the limit is a fraction in [0, 1], got {entry[op]!r}")
    bound = entry.get("bound", "point")
    if bound not in ("point", "lower", "upper"):
        raise _fail(source, where, f"'bound' must be point, lower or upper, got {bound!r}")
    if bound != "point" and not info.interval:
        raise _fail(source, where, "has no interval: use bound 'point' (or leave it out)")
    classes = entry.get("classes")
    if classes is not None:
        if not info.per_class:
            raise _fail(source, where, "'classes' applies only to per-class metrics")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise _fail(source, where, "'classes' must be a non-empty list of class names")
    return Criterion(metric, op, limit, bound, tuple(classes) if classes is not None else None)


def parse_criteria(document: Any, source: str = "<criteria>") -> Criteria:
    """Criteria from a parsed YAML document (see the module docstring); raises :class:`CriteriaError`."""
    if not isinstance(document, Mapping):
        raise CriteriaError(f"criteria file {source}: expected a mapping with a 'criteria' list")
    unknown = sorted(set(document) - {"models", "target_sensitivity", "criteria"})
    if unknown:
        raise CriteriaError(f"criteria file {source}: unknown keys {unknown}")
    entries = document.get("criteria")
    if not isinstance(entries, list) or not entries:
        raise CriteriaError(f"criteria file {source}: 'criteria' must be a non-empty list")
    models = document.get("models", "supervised")
    if isinstance(models, list) and models and all(isinstance(m, str) and m for m in models):
        models = tuple(models)
    elif models not in MODEL_SETS:
        raise CriteriaError(
            f"criteria file {source}: 'models' must be 'supervised', 'all' or a list of model names"
        )
    target = document.get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)
    target = _number(target, source, "target_sensitivity")
    if not 0 < target <= 1:
        raise CriteriaError(f"criteria file {source}: target_sensitivity must be in (0, 1], got {target}")
    criteria = tuple(_criterion(entry, i, source) for i, entry in enumerate(entries))
    return Criteria(criteria, models, target, source)


def load_criteria(path: Path) -> Criteria:
    """Reads an acceptance-criteria YAML file; any problem is a :class:`CriteriaError` naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CriteriaError(f"cannot read criteria file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CriteriaError(f"criteria file {path} is not a text (YAML) file") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CriteriaError(f"criteria file {path} is not valid YAML: {exc}") from None
    return parse_criteria(document, str(path))


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...], cls: str | None) -> Any:
    node: Any = tree
    for part in path:
        key = cls if part == "{class}" and cls is not None else part
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _observed(node: Any, bound: Bound) -> float | None:
    if isinstance(node, Mapping):
        value = node.get({"point": "value", "lower": "low", "upper": "high"}[bound])
        return None if value is None else float(value)
    return None if node is None else float(node)


def _verdict(criterion: Criterion, model: str, cls: str | None, node: Any) -> dict[str, Any]:
    observed = _observed(node, criterion.bound)
    if observed is None:
        passed = False
    elif criterion.op == "min":
        passed = observed >= criterion.limit
    else:
        passed = observed <= criterion.limit
    return {
        "model": model,
        "metric": criterion.metric,
        "class": cls,
        "bound": criterion.bound,
        "op": criterion.op,
        "limit": criterion.limit,
        "observed": observed,
        "passed": passed,
        "criterion": criterion.words(cls),
    }


def evaluate_criteria(
    criteria: Criteria,
    data: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
) -> list[dict[str, Any]]:
    """One verdict per criterion, model and class (per-class metrics): the data's own criteria first, then
    each model's. A metric the data cannot measure (e.g. no myeloblasts, no patients named) fails."""
    verdicts = []
    for name, results in {DATA: data, **models}.items():
        for criterion in criteria.criteria:
            info = METRICS[criterion.metric]
            if info.data != (name == DATA):
                continue
            targets: list[str | None] = list(criterion.classes or classes) if info.per_class else [None]
            for cls in targets:
                verdicts.append(_verdict(criterion, name, cls, _lookup(results, info.path, cls)))
    return verdicts
