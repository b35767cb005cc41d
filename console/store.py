"""The result store (SQLAlchemy Core): every analysis with its images, the batches they came in, the
reviews of them, and the Jobs page's jobs and audit log (read and written by console.job_store). SQLite by
default, PostgreSQL by URL; tables are created when missing."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

metadata = sa.MetaData()

batches = sa.Table(
    "console_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
)

analyses = sa.Table(
    "console_analyses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.Integer, sa.ForeignKey("console_batches.id", ondelete="CASCADE"), index=True),
    sa.Column("position", sa.Integer, nullable=False),
    # "cell" (classified) or "smear" (cells detected)
    sa.Column("kind", sa.String(8), nullable=False, default="cell", index=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    # pending -> done | failed
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("image_format", sa.String(16), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False),
    sa.Column("display_png", sa.LargeBinary, nullable=False),
    sa.Column("thumb_png", sa.LargeBinary, nullable=False),
    sa.Column("overlay_png", sa.LargeBinary, nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=False, default=""),
    sa.Column("label", sa.String(64), nullable=True, index=True),
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("agreement", sa.Float, nullable=True),
    sa.Column("malignant_probability", sa.Float, nullable=True),
    sa.Column("malignant", sa.Boolean, nullable=True),
    sa.Column("refer", sa.Boolean, nullable=True),
    sa.Column("site_status", sa.String(32), nullable=False, default=""),
    # JSON text: the report's parts, per-model votes, mean probabilities, referral reasons, versions
    sa.Column("report", sa.Text, nullable=False, default="{}"),
    # the latest review, denormalised for filtering; the history is in console_reviews
    sa.Column("review", sa.String(16), nullable=False, default="", index=True),
    sa.Column("reviewed_label", sa.String(64), nullable=True),
)

reviews = sa.Table(
    "console_reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "analysis_id", sa.Integer, sa.ForeignKey("console_analyses.id", ondelete="CASCADE"), index=True
    ),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    # confirmed | corrected
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("previous_label", sa.String(64), nullable=True),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
)

jobs = sa.Table(
    "console_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # train | evaluate | validate
    sa.Column("kind", sa.String(16), nullable=False),
    # queued -> running -> succeeded | failed | cancelled (a queued job may go straight to cancelled)
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
    # JSON text: what was chosen on the form (dataset, bundle, options), for display
    sa.Column("choices", sa.Text, nullable=False, default="{}"),
    # JSON text: the command line run
    sa.Column("argv", sa.Text, nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=False, default=""),
)

audit = sa.Table(
    "console_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    # job_started | job_cancelled | bundle_promoted | bundle_promotion_refused
    sa.Column("action", sa.String(32), nullable=False, index=True),
    sa.Column("job_id", sa.Integer, nullable=True, index=True),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

LIST_COLUMNS = [c for c in analyses.c if c.name not in ("image", "display_png", "thumb_png", "overlay_png")]


@dataclass(frozen=True)
class Upload:
    """One accepted image, ready to be stored before its analysis; its display and thumbnail PNGs are empty
    until the batch's pipeline has converted it (``record_pictures``)."""

    filename: str
    image: bytes
    image_format: str
    width: int
    height: int
    display_png: bytes = b""
    thumb_png: bytes = b""


@dataclass(frozen=True)
class Filters:
    """What the results table and gallery show. ``label`` matches the reviewed class when there is one,
    else the consensus; ``min/max_confidence`` are the consensus probability."""

    label: str | None = None
    malignant: bool | None = None
    refer: bool | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    batch_id: int | None = None
    review: str | None = None  # "none", "confirmed", "corrected"
    kind: str = "cell"

    def where(self) -> list[sa.ColumnElement[bool]]:
        c = analyses.c
        clauses: list[sa.ColumnElement[bool]] = [c.kind == self.kind]
        if self.label:
            clauses.append(sa.func.coalesce(c.reviewed_label, c.label) == self.label)
        if self.malignant is not None:
            clauses.append(c.malignant.is_(self.malignant))
        if self.refer is not None:
            clauses.append(c.refer.is_(self.refer))
        if self.min_confidence is not None:
            clauses.append(c.confidence >= self.min_confidence)
        if self.max_confidence is not None:
            clauses.append(c.confidence <= self.max_confidence)
        if self.batch_id is not None:
            clauses.append(c.batch_id == self.batch_id)
        if self.review == "none":
            clauses.append(c.review == "")
        elif self.review in ("confirmed", "corrected"):
            clauses.append(c.review == self.review)
        return clauses


def now() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created; SQLite gets foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


class ResultStore:
    """Reads and writes analyses, batches and reviews."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_batch(self, user: str, uploads: Sequence[Upload], kind: str = "cell") -> tuple[int, list[int]]:
        """Stores a batch of pending analyses; returns the batch id and the analysis ids in upload order."""
        with self.engine.begin() as conn:
            batch_id = int(
                conn.execute(
                    batches.insert().values(created=now(), created_by=user, total=len(uploads))
                ).inserted_primary_key[0]  # type: ignore[index]
            )
            ids = []
            for position, upload in enumerate(uploads):
                result = conn.execute(
                    analyses.insert().values(
                        batch_id=batch_id,
                        position=position,
                        kind=kind,
                        filename=upload.filename,
                        created=now(),
                        created_by=user,
                        status="pending",
                        error="",
                        image_format=upload.image_format,
                        width=upload.width,
                        height=upload.height,
                        image=upload.image,
                        display_png=upload.display_png,
                        thumb_png=upload.thumb_png,
                        content_hash="",
                        site_status="",
                        report="{}",
                        review="",
                    )
                )
                ids.append(int(result.inserted_primary_key[0]))  # type: ignore[index]
        return batch_id, ids

    def image(self, analysis_id: int) -> bytes:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(analyses.c.image).where(analyses.c.id == analysis_id)).scalar()
        return bytes(value) if value is not None else b""

    def original(self, analysis_id: int) -> tuple[str, bytes]:
        """The file name and the uploaded bytes of an analysis ("", b"" when there is none)."""
        query = sa.select(analyses.c.filename, analyses.c.image).where(analyses.c.id == analysis_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (str(row[0]), bytes(row[1])) if row is not None else ("", b"")

    def record_pictures(self, analysis_id: int, display_png: bytes, thumb_png: bytes) -> None:
        """Stores the display and thumbnail PNGs made from an analysis's upload."""
        values = {"display_png": display_png, "thumb_png": thumb_png}
        with self.engine.begin() as conn:
            conn.execute(analyses.update().where(analyses.c.id == analysis_id).values(**values))

    def record_result(self, analysis_id: int, values: dict[str, Any]) -> None:
        """Stores an analysis's outcome (``status`` done or failed, and its columns)."""
        with self.engine.begin() as conn:
            conn.execute(analyses.update().where(analyses.c.id == analysis_id).values(**values))

    def record_explanation(self, analysis_id: int, explanation: dict[str, Any], overlay_png: bytes) -> int:
        """Makes ``explanation`` (with its overlay) the analysis's shown one, leaving its classification as it
        is; returns its revision (1 for the first one asked for after the analysis, and so on)."""
        with self.engine.begin() as conn:
            query = sa.select(analyses.c.report).where(analyses.c.id == analysis_id).with_for_update()
            current = conn.execute(query).scalar()
            if current is None:
                raise KeyError(analysis_id)
            report = json.loads(current or "{}")
            revision = int((report.get("explanation") or {}).get("revision", 0)) + 1
            report["explanation"] = explanation | {"revision": revision}
            conn.execute(
                analyses.update()
                .where(analyses.c.id == analysis_id)
                .values(report=json.dumps(report), overlay_png=overlay_png)
            )
        return revision

    def fail_interrupted(self) -> int:
        """Marks analyses left pending by an earlier run of the console (which analyses in process) as
        failed; returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                analyses.update()
                .where(analyses.c.status == "pending")
                .values(status="failed", error="interrupted: the console stopped before the answer came")
            )
        return int(result.rowcount or 0)

    def batch(self, batch_id: int) -> RowMapping | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().first()

    def search(self, filters: Filters, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
        query = (
            sa.select(*LIST_COLUMNS)
            .where(*filters.where())
            .order_by(analyses.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [decode(row) for row in conn.execute(query).mappings()]

    def count(self, filters: Filters) -> int:
        query = sa.select(sa.func.count()).select_from(analyses).where(*filters.where())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def batch_analyses(self, batch_id: int) -> list[dict[str, Any]]:
        query = sa.select(*LIST_COLUMNS).where(analyses.c.batch_id == batch_id).order_by(analyses.c.position)
        with self.engine.connect() as conn:
            return [decode(row) for row in conn.execute(query).mappings()]

    def get(self, analysis_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(*LIST_COLUMNS).where(analyses.c.id == analysis_id)).mappings().first()
            )
        return decode(row) if row is not None else None

    def blob(self, analysis_id: int, column: str) -> bytes | None:
        """One stored picture: ``display_png``, ``thumb_png`` or ``overlay_png``; None when there is none
        (yet: the pictures of an image not yet converted are empty)."""
        if column not in ("display_png", "thumb_png", "overlay_png"):
            raise ValueError(column)
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(analyses.c[column]).where(analyses.c.id == analysis_id)).scalar()
        return bytes(value) if value else None

    def review(self, analysis_id: int, reviewer: str, label: str, comment: str) -> str:
        """Records a review: ``confirmed`` when ``label`` is the consensus, else ``corrected``."""
        with self.engine.begin() as conn:
            current = conn.execute(
                sa.select(analyses.c.label, analyses.c.reviewed_label).where(analyses.c.id == analysis_id)
            ).first()
            if current is None:
                raise KeyError(analysis_id)
            action = "confirmed" if label == current.label else "corrected"
            previous = current.reviewed_label or current.label
            conn.execute(
                reviews.insert().values(
                    analysis_id=analysis_id,
                    reviewer=reviewer,
                    created=now(),
                    action=action,
                    previous_label=previous,
                    label=label,
                    comment=comment,
                )
            )
            conn.execute(
                analyses.update()
                .where(analyses.c.id == analysis_id)
                .values(review=action, reviewed_label=label)
            )
        return action

    def reviews_of(self, analysis_id: int) -> list[RowMapping]:
        query = sa.select(reviews).where(reviews.c.analysis_id == analysis_id).order_by(reviews.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings())

    def reviewed(self, corrected_only: bool) -> Iterator[tuple[int, str, str, str, bytes]]:
        """(id, reviewed label, file name, format, original bytes) of every reviewed analysis, one at a
        time (the images are never all in memory)."""
        wanted = ["corrected"] if corrected_only else ["confirmed", "corrected"]
        query = sa.select(analyses.c.id).where(analyses.c.review.in_(wanted)).order_by(analyses.c.id)
        with self.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        c = analyses.c
        columns = (c.reviewed_label, c.filename, c.image_format, c.image)
        for analysis_id in ids:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(*columns).where(analyses.c.id == analysis_id)).first()
            if row is not None:
                yield analysis_id, str(row[0]), str(row[1]), str(row[2]), bytes(row[3])

    def recent_reports(self, limit: int) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(consensus label, reviewed label or None, report) of the latest ``limit`` analysed images."""
        query = (
            sa.select(analyses.c.label, analyses.c.reviewed_label, analyses.c.report)
            .where(analyses.c.status == "done", analyses.c.label.is_not(None))
            .order_by(analyses.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(str(r[0]), r[1], json.loads(r[2] or "{}")) for r in conn.execute(query)]

    def delete(self, analysis_id: int) -> bool:
        with self.engine.begin() as conn:
            conn.execute(reviews.delete().where(reviews.c.analysis_id == analysis_id))
            return bool(conn.execute(analyses.delete().where(analyses.c.id == analysis_id)).rowcount)

    def labels(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(
                {str(v) for v in conn.execute(sa.select(analyses.c.label).distinct()).scalars() if v}
            )


def decode(row: RowMapping) -> dict[str, Any]:
    """A row as a dict with its JSON report parsed."""
    result = dict(row)
    result["report"] = json.loads(result.get("report") or "{}")
    return result
