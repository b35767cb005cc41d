"""What a batch run did: counts per class, flags, referrals, errors, skipped images and images per second."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Summary:
    run_id: str
    out: str
    images: int = 0
    analysed: int = 0
    errors: int = 0
    skipped: int = 0
    malignant: int = 0
    referred: int = 0
    seconds: float = 0.0
    #: time to the first finished batch (Ray start-up excluded: actors starting, models loading) and its rows
    warmup_s: float = 0.0
    warmup_rows: int = 0
    per_class: Counter[str] = field(default_factory=Counter)
    error_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, results: pa.Table, errors: pa.Table, skipped: int) -> None:
        self.analysed += results.num_rows
        self.errors += errors.num_rows
        self.skipped += skipped
        self.images += results.num_rows + errors.num_rows + skipped
        self.error_reasons.update(str(r) for r in errors.column("reason").to_pylist())
        if "label" in results.column_names and results.num_rows:
            self.per_class.update(str(label) for label in results.column("label").to_pylist())
            self.malignant += int(pc.sum(results.column("malignant")).as_py() or 0)
            self.referred += int(pc.sum(results.column("refer")).as_py() or 0)

    @property
    def images_per_second(self) -> float:
        done = self.analysed + self.errors
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float:
        """The rate once the first batch was out: the pool's throughput without its start-up."""
        rest = self.seconds - self.warmup_s
        done = self.analysed + self.errors - self.warmup_rows
        return done / rest if rest > 0 and done > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "out": self.out,
            "images": self.images,
            "analysed": self.analysed,
            "errors": self.errors,
            "skipped": self.skipped,
            "malignant": self.malignant,
            "referred": self.referred,
            "per_class": dict(sorted(self.per_class.items())),
            "error_reasons": dict(sorted(self.error_reasons.items())),
            "seconds": round(self.seconds, 2),
            "images_per_second": round(self.images_per_second, 2),
            "warmup_s": round(self.warmup_s, 2),
            "steady_images_per_second": round(self.steady_images_per_second, 2),
        }

    def lines(self) -> list[str]:
        lines = [
            f"{self.images} images: {self.analysed} analysed, {self.skipped} already in {self.out}, "
            f"{self.errors} errors; {self.images_per_second:.1f} images/s over {self.seconds:.1f} s"
        ]
        if self.per_class:
            counts = ", ".join(f"{name} {n}" for name, n in sorted(self.per_class.items()))
            lines.append(f"consensus: {counts}")
            lines.append(f"malignant flag: {self.malignant}; referred to a human: {self.referred}")
        if self.error_reasons:
            reasons = ", ".join(f"{name} {n}" for name, n in sorted(self.error_reasons.items()))
            lines.append(f"errors: {reasons} (table: {self.out}/_errors)")
        return lines
