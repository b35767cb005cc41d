"""The research console over Starlette's TestClient, in front of a real gateway and real services: login
with gateway keys and roles, CSRF on every POST, content-checked uploads, a batch analysed through the
gateway and stored (SQLite and PostgreSQL), filters, exports, reviews and the retraining zip."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.routing import Route
from starlette.testclient import TestClient

from console.app import HERE, create_app
from console.images import safe_name
from console.sessions import COOKIE_NAME
from tests.conftest import encode
from tests.console_fixtures import ConsoleStack, console_settings, postgres_schema, wait_for

CELLS = ("myeloblast", "seg_neutrophil", "basophil")


@pytest.fixture(scope="module")
def cell_files(data_dir: Path) -> list[Path]:
    return [sorted((data_dir / "bloodcells-5class" / "val" / name).glob("*.jpg"))[0] for name in CELLS]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'console.db'}"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'console.db'}"


def client_for(stack: ConsoleStack, url: str, **overrides: object) -> TestClient:
    return TestClient(create_app(console_settings(stack, url, **overrides)), follow_redirects=False)


def csrf_of(client: TestClient, page: str = "/login") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(page).text)
    assert found, f"no CSRF token on {page}"
    return found.group(1)


def login(client: TestClient, key: str) -> TestClient:
    response = client.post("/login", data={"api_key": key, "csrf_token": csrf_of(client)})
    assert response.status_code == 303, response.text
    return client


def upload(client: TestClient, files: list[tuple[str, bytes]], explain: bool = True) -> object:
    token = csrf_of(client, "/analyse")
    data = {"csrf_token": token} | ({"explain": "on"} if explain else {})
    return client.post("/analyse", data=data, files=[("images", (n, b, "image/jpeg")) for n, b in files])


def wait_batch(client: TestClient, batch_url: str, total: int) -> str:
    wait_for(lambda: f"{total} of {total} analysed" in client.get(batch_url + "/cards").text, "the batch")
    return client.get(batch_url).text


def test_login_needs_a_key_both_the_console_and_the_gateway_accept(
    console_stack: ConsoleStack, sqlite_url: str
) -> None:
    with client_for(console_stack, sqlite_url) as client:
        assert client.get("/results").headers["location"] == "/login"
        for key in ("hsk_wrong", console_stack.stranger_key, console_stack.console_only_key):
            response = client.post("/login", data={"api_key": key, "csrf_token": csrf_of(client)})
            assert response.status_code == 401
            assert client.get("/results").status_code == 303
        assert "gateway refused" in response.text  # the last one: known here, refused by the gateway
        login(client, console_stack.keys["viewer"])
        cookie = client.cookies[COOKIE_NAME]
        assert console_stack.keys["viewer"] not in cookie
        page = client.get("/results")
        assert page.status_code == 200 and "viewer (viewer)" in page.text
        token = csrf_of(client, "/results")
        assert client.post("/logout", data={"csrf_token": token}).status_code == 303
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, cookie)  # the old cookie is worthless once logged out
        assert client.get("/results").headers["location"] == "/login"


def test_a_forged_or_tampered_cookie_is_not_a_session(console_stack: ConsoleStack, sqlite_url: str) -> None:
    with client_for(console_stack, sqlite_url) as client:
        login(client, console_stack.keys["admin"])
        cookie = client.cookies[COOKIE_NAME]
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, cookie)
        assert client.get("/results").status_code == 200  # the cookie alone is the session
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))
        assert client.get("/results").status_code == 303


def test_every_post_refuses_a_missing_or_wrong_csrf_token(
    console_stack: ConsoleStack, sqlite_url: str
) -> None:
    app = create_app(console_settings(console_stack, sqlite_url))
    ids = {"{analysis_id:int}": "1", "{job_id:int}": "1", "{index:int}": "0"}
    posts = [r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    for placeholder, value in ids.items():
        posts = [path.replace(placeholder, value) for path in posts]
    assert {"/login", "/logout", "/analyse", "/analyses/1/review", "/analyses/1/delete"} <= set(posts)
    assert {"/jobs", "/jobs/1/cancel"} <= set(posts)
    with TestClient(app, follow_redirects=False) as client:
        login(client, console_stack.keys["admin"])
        for path in posts:
            for data in ({}, {"csrf_token": "forged"}):
                response = client.post(path, data=data)
                assert response.status_code == 403, path
        assert client.get("/results").status_code == 200  # still logged in: logout was refused too


def test_pages_carry_a_strict_csp_and_templates_have_no_inline_code(
    console_stack: ConsoleStack, sqlite_url: str
) -> None:
    with client_for(console_stack, sqlite_url) as client:
        headers = client.get("/login").headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "default-src 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    for template in (HERE / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=|javascript:", text), template.name
    htmx = (HERE / "static" / "htmx.min.js").read_text()
    assert "htmx" in htmx and (HERE / "static" / "htmx.LICENSE").is_file()


def test_uploads_are_checked_on_their_content(
    console_stack: ConsoleStack, sqlite_url: str, cell_files: list[Path]
) -> None:
    big = encode(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    with client_for(
        console_stack, sqlite_url, max_upload_bytes=len(big) - 1, max_pixels=1000 * 1000
    ) as client:
        login(client, console_stack.keys["reviewer"])
        jpeg = cell_files[0].read_bytes()
        cases = {
            "script.jpg": (b"<script>alert(1)</script>", "not a readable image"),
            "big.png": (big, "over the limit"),
            "huge.gif": (encode(np.zeros((8, 8, 3), np.uint8), "GIF"), "GIF is not accepted"),
            "wide.jpg": (encode(np.zeros((20, 60000, 3), np.uint8), "JPEG"), "pixels is over the limit"),
        }
        for name, (data, message) in cases.items():
            response = upload(client, [(name, data)])
            assert response.status_code == 400, name
            assert message in response.text, name
        assert client.get("/results").text.count('data-testid="result-row"') == 0
        # a truncated file has a sound header: it is only found out when its pipeline decodes it, and
        # becomes a failed card saying why, while the rest of its batch is analysed
        response = upload(client, [("truncated.jpg", jpeg[: len(jpeg) // 3]), ("whole.jpg", jpeg)])
        assert response.status_code == 303
        page = wait_batch(client, response.headers["location"], 2)
        assert "truncated.jpg: not a readable image (or truncated)" in page
        assert page.count("status-failed") == 1 and page.count("status-done") == 1
    with client_for(console_stack, sqlite_url, max_batch_bytes=len(big)) as client:
        login(client, console_stack.keys["reviewer"])
        response = upload(client, [("a.png", big), ("b.png", big)])
        assert response.status_code == 413 and "larger than" in response.text


def test_a_viewer_cannot_analyse_review_or_take_the_training_export(
    console_stack: ConsoleStack, sqlite_url: str, cell_files: list[Path]
) -> None:
    with client_for(console_stack, sqlite_url) as client:
        login(client, console_stack.keys["viewer"])
        assert client.get("/analyse").status_code == 403
        token = csrf_of(client, "/results")
        files = [("images", ("a.jpg", cell_files[0].read_bytes(), "image/jpeg"))]
        assert client.post("/analyse", data={"csrf_token": token}, files=files).status_code == 403
        assert client.post("/analyses/1/review", data={"csrf_token": token, "label": "x"}).status_code == 403
        assert client.get("/export/training.zip").status_code == 403
        assert client.get("/export/results.csv").status_code == 200
        assert 'href="/analyse"' not in client.get("/results").text


def test_a_batch_is_analysed_stored_filtered_reviewed_and_exported(
    console_stack: ConsoleStack, database_url: str, cell_files: list[Path]
) -> None:
    names = ["../../etc/passwd.jpg", "<img src=x onerror=alert(1)>.jpg", "=cmd.jpg"]
    files = [(name, path.read_bytes()) for name, path in zip(names, cell_files, strict=True)]
    with client_for(console_stack, database_url) as client:
        login(client, console_stack.keys["reviewer"])
        response = upload(client, files)
        assert response.status_code == 303
        batch_url = response.headers["location"]
        page = wait_batch(client, batch_url, 3)
        assert "hx-trigger" not in page  # finished: the cards stop polling
        assert page.count('data-testid="result-card"') == 3
        assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page and "<img src=x" not in page
        ids = [int(i) for i in re.findall(r'data-analysis="(\d+)"', page)]
        rows = {
            r["id"]: r for r in client.get(f"/export/results.json?batch={batch_url.rsplit('/', 1)[1]}").json()
        }
        assert set(rows) == set(ids)
        models = {"logistic_regression", "svm", "random_forest", "xgboost"}
        for analysis_id in ids:
            row = rows[analysis_id]
            assert row["status"] == "done", row["error"]
            assert row["label"] in ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
            assert models <= {v["model"] for v in row["votes"]}
            assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
            overlay = client.get(f"/analyses/{analysis_id}/overlay.png")
            assert overlay.headers["content-type"] == "image/png"
            with Image.open(io.BytesIO(overlay.content)) as picture:
                assert picture.size == (row["width"], row["height"])
            detail = client.get(f"/analyses/{analysis_id}").text
            assert 'class="opacity"' in detail and 'data-testid="consensus"' in detail
        by_name = {rows[i]["filename"]: rows[i] for i in ids}
        assert by_name["passwd.jpg"]["label"] == "myeloblast" and by_name["passwd.jpg"]["malignant"] is True
        check_filters(client, rows)
        check_review_and_exports(client, by_name, names, files)


def listed(client: TestClient, query: str) -> set[int]:
    return {r["id"] for r in client.get(f"/export/results.json?{query}").json()}


def check_filters(client: TestClient, rows: dict[int, dict[str, Any]]) -> None:
    ids = set(rows)
    myeloblast = next(r for r in rows.values() if r["filename"] == "passwd.jpg")

    assert listed(client, "label=myeloblast") == {myeloblast["id"]}
    assert listed(client, "malignant=yes") == {r["id"] for r in rows.values() if r["malignant"]}
    assert listed(client, "malignant=no") == {r["id"] for r in rows.values() if not r["malignant"]}
    assert listed(client, "refer=yes") | listed(client, "refer=no") == set(ids)
    low = min(r["confidence"] for r in rows.values())
    assert listed(client, f"min_confidence={low + 1e-9:.12f}") == {
        r["id"] for r in rows.values() if r["confidence"] > low
    }
    assert client.get("/results?min_confidence=2").status_code == 400
    gallery = client.get("/gallery?label=myeloblast").text
    assert gallery.count('data-testid="gallery-tile"') == 1


def check_review_and_exports(
    client: TestClient, by_name: dict[str, dict[str, Any]], names: list[str], files: list[tuple[str, bytes]]
) -> None:
    """Confirms one result, corrects another; the history says who and what; the exports follow."""
    myeloblast = by_name["passwd.jpg"]
    ids = {r["id"] for r in by_name.values()}
    classes_page = client.get(f"/analyses/{myeloblast['id']}")
    token = csrf_of(client, f"/analyses/{myeloblast['id']}")
    assert "Not reviewed yet" in classes_page.text
    corrected = by_name[names[1]]
    new_label = "monocyte" if corrected["label"] != "monocyte" else "basophil"
    client.post(f"/analyses/{myeloblast['id']}/review", data={"csrf_token": token, "label": "myeloblast"})
    response = client.post(
        f"/analyses/{corrected['id']}/review",
        data={"csrf_token": token, "label": new_label, "comment": "nucleus <shape>"},
    )
    assert response.status_code == 303
    bad = client.post(f"/analyses/{corrected['id']}/review", data={"csrf_token": token, "label": "../x"})
    assert bad.status_code == 400
    history = client.get(f"/analyses/{corrected['id']}").text
    assert "reviewer" in history and "corrected" in history and "nucleus &lt;shape&gt;" in history
    assert listed(client, "review=corrected") == {corrected["id"]}
    assert listed(client, f"label={new_label}") >= {corrected["id"]}
    assert listed(client, "review=confirmed") == {myeloblast["id"]}

    text = client.get("/export/results.csv").text
    table = list(csv.DictReader(io.StringIO(text)))
    assert {int(r["id"]) for r in table} >= set(ids)
    assert "'=cmd.jpg" in text  # a formula-looking name is defused
    archive = zipfile.ZipFile(io.BytesIO(client.get("/export/training.zip?corrected=only").content))
    images = [n for n in archive.namelist() if n != "labels.csv"]
    assert images == [f"{new_label}/{corrected['id']}-{safe_name(names[1])}"]
    assert archive.read(images[0]) == files[1][1]
    everything = zipfile.ZipFile(io.BytesIO(client.get("/export/training.zip").content)).namelist()
    assert f"myeloblast/{myeloblast['id']}-passwd.jpg" in everything
    assert all(".." not in n and not n.startswith("/") for n in everything)
    labels = archive.read("labels.csv").decode()
    assert new_label in labels


def test_an_admin_deletes_a_result_a_reviewer_cannot(
    console_stack: ConsoleStack, sqlite_url: str, cell_files: list[Path]
) -> None:
    app = create_app(console_settings(console_stack, sqlite_url))
    with (
        TestClient(app, follow_redirects=False) as reviewer,
        TestClient(app, follow_redirects=False) as admin,
    ):
        login(reviewer, console_stack.keys["reviewer"])
        batch_url = upload(reviewer, [("cell.jpg", cell_files[1].read_bytes())], explain=False).headers[
            "location"
        ]
        page = wait_batch(reviewer, batch_url, 1)
        analysis_id = int(re.findall(r'data-analysis="(\d+)"', page)[0])
        token = csrf_of(reviewer, f"/analyses/{analysis_id}")
        assert reviewer.post(f"/analyses/{analysis_id}/delete", data={"csrf_token": token}).status_code == 403
        login(admin, console_stack.keys["admin"])
        token = csrf_of(admin, f"/analyses/{analysis_id}")
        assert admin.post(f"/analyses/{analysis_id}/delete", data={"csrf_token": token}).status_code == 303
        assert admin.get(f"/analyses/{analysis_id}").status_code == 404
        assert admin.get(f"/analyses/{analysis_id}/thumb.png").status_code == 404


def test_pictures_and_pages_are_addressed_by_number_only(
    console_stack: ConsoleStack, sqlite_url: str
) -> None:
    with client_for(console_stack, sqlite_url) as client:
        login(client, console_stack.keys["viewer"])
        paths = ("/analyses/..%2F..%2Fetc%2Fpasswd", "/analyses/1/../../etc/passwd", "/static/..%2Fapp.py")
        for path in (*paths, "/analyses/999/image.png", "/batches/abc"):
            assert client.get(path).status_code == 404, path
        assert json.loads(client.get("/export/results.json").text) == []


def test_a_smear_is_counted_shown_with_its_boxes_and_kept_apart_from_cells(
    console_stack: ConsoleStack, sqlite_url: str, data_dir: Path
) -> None:
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    smear = data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg"
    with client_for(console_stack, sqlite_url) as client:
        login(client, console_stack.keys["reviewer"])
        token = csrf_of(client, "/smears")
        files = [("images", ("smear.jpg", smear.read_bytes(), "image/jpeg"))]
        response = client.post("/smears", data={"csrf_token": token}, files=files)
        assert response.status_code == 303
        page = wait_batch(client, response.headers["location"], 1)
        analysis_id = int(re.findall(r'data-analysis="(\d+)"', page)[0])
        assert 'data-testid="boxes"' in page
        found = int(re.search(r'data-testid="cell-count">(\d+) cells', page).group(1))  # type: ignore[union-attr]
        assert found > 0
        listing = client.get("/smears").text
        assert listing.count('data-testid="smear-row"') == 1 and "RBC" in listing
        boxed = client.get(f"/analyses/{analysis_id}/overlay.png").content
        with Image.open(io.BytesIO(boxed)) as picture, Image.open(smear) as original:
            assert picture.size == original.size  # BCCD smears are 640x480: shown at full size
        assert client.get("/export/results.json").json() == []  # the cell results hold no smear
        bad = client.post(f"/analyses/{analysis_id}/review", data={"csrf_token": token, "label": "RBC"})
        assert bad.status_code == 400  # smears are counted, not reviewed as a cell
    with client_for(console_stack, sqlite_url) as viewer:
        login(viewer, console_stack.keys["viewer"])
        page = viewer.get("/smears").text
        assert 'data-testid="smear-row"' in page and 'id="smear-form"' not in page
        token = csrf_of(viewer, "/results")
        assert viewer.post("/smears", data={"csrf_token": token}, files=files).status_code == 403
