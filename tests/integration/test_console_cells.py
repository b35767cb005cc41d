"""Detected boxes on the console's pages and the white cells of a smear classified on a click, through
Starlette's TestClient in front of a real gateway and real services."""

from __future__ import annotations

import asyncio
import html
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient

from console.app import create_app
from console.cells import crop_box, is_white_cell
from console.store import ResultStore
from gateway.site_monitor import UNVALIDATED_REASON
from hemascope.client import AsyncHemascopeClient
from tests.console_fixtures import ConsoleStack, console_settings, wait_for

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def smear(data_dir: Path) -> Path:
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    return data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg"


def csrf_of(client: TestClient, page: str) -> str:
    found = CSRF.search(client.get(page).text)
    assert found, page
    return found.group(1)


def logged_in(client: TestClient, key: str) -> TestClient:
    response = client.post("/login", data={"api_key": key, "csrf_token": csrf_of(client, "/login")})
    assert response.status_code == 303
    return client


def finished_batch(client: TestClient, response: Any) -> tuple[str, int]:
    assert response.status_code == 303, response.text
    batch = response.headers["location"]
    wait_for(lambda: "1 of 1 analysed" in client.get(batch + "/cards").text, "the batch")
    page = client.get(batch).text
    return page, int(re.findall(r'data-analysis="(\d+)"', page)[0])


def store_of(client: TestClient) -> ResultStore:
    store: ResultStore = client.app.state.console.store  # type: ignore[attr-defined]
    return store


def test_detected_boxes_are_drawn_over_an_analysed_cell_with_a_switch(
    console_stack: ConsoleStack, tmp_path: Path, smear: Path
) -> None:
    app = create_app(console_settings(console_stack, f"sqlite:///{tmp_path / 'console.db'}"))
    with TestClient(app, follow_redirects=False) as client:
        logged_in(client, console_stack.keys["reviewer"])
        data = {"csrf_token": csrf_of(client, "/analyse"), "explain": "on", "detect": "on"}
        files = [("images", ("field.jpg", smear.read_bytes(), "image/jpeg"))]
        page, analysis_id = finished_batch(client, client.post("/analyse", data=data, files=files))
        row = store_of(client).get(analysis_id)
        assert row is not None and row["status"] == "done", row
        boxes = row["report"]["detection"]["boxes"]
        assert boxes and row["report"]["explanation"]  # both asked for, both there
        assert 'data-testid="overlay"' in page  # the Grad-CAM overlay is kept, the boxes go over it
        layer = re.search(r'<svg class="boxes" id="boxes-(\d+)"[^>]*viewBox="0 0 (\d+) (\d+)"', page)
        assert layer and layer.groups() == (str(analysis_id), str(row["width"]), str(row["height"]))
        rects = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page)
        assert len(rects) == len(boxes)
        for (x, y, w, h), box in zip(rects, boxes, strict=True):
            assert float(x) == pytest.approx(box["x1"], abs=0.06) and float(y) == pytest.approx(
                box["y1"], abs=0.06
            )
            assert float(w) == pytest.approx(box["x2"] - box["x1"], abs=0.1)
            assert float(h) == pytest.approx(box["y2"] - box["y1"], abs=0.1)
        assert f"{len(boxes)} cells detected" in page  # the layer's accessible name
        assert page.count("<title>") >= len(boxes) + 1  # and each box's
        assert f'data-target="boxes-{analysis_id}" aria-controls="boxes-{analysis_id}"' in page
        layer_markup = page.split('<svg class="boxes"', 1)[1].split("</svg>", 1)[0]
        assert 'class="box c' in layer_markup
        assert "data-button=" not in layer_markup  # cells analysed one by one offer no white cell to click
        undetected = {"csrf_token": csrf_of(client, "/analyse")}
        page, _ = finished_batch(client, client.post("/analyse", data=undetected, files=files))
        assert 'class="boxes"' not in page and "boxes-toggle" not in page


def check_refusals(client: TestClient, cells: str, index: int, bad: list[int], token: str) -> None:
    """Indexes that name no white cell are 404; a post without the CSRF token is 403; without htmx the
    answer is a page."""
    headers = {"x-csrf-token": token, "hx-request": "true"}
    for number in bad:
        assert client.post(f"{cells}/{number}/classify", headers=headers).status_code == 404
        assert client.get(f"{cells}/{number}.png").status_code == 404
    assert client.post(f"{cells}/-1/classify", headers=headers).status_code == 404
    assert client.post(f"{cells}/{index}/classify").status_code == 403  # no CSRF token
    page_answer = client.post(f"{cells}/{index}/classify", data={"csrf_token": token})
    assert page_answer.status_code == 200 and "<html" in page_answer.text  # without htmx: a page


def test_a_click_on_a_white_cell_of_a_smear_classifies_its_crop(
    console_stack: ConsoleStack, tmp_path: Path, smear: Path
) -> None:
    app = create_app(console_settings(console_stack, f"sqlite:///{tmp_path / 'console.db'}"))
    with TestClient(app, follow_redirects=False) as client:
        logged_in(client, console_stack.keys["reviewer"])
        files = [("images", ("smear.jpg", smear.read_bytes(), "image/jpeg"))]
        response = client.post("/smears", data={"csrf_token": csrf_of(client, "/smears")}, files=files)
        _, analysis_id = finished_batch(client, response)
        boxes = store_of(client).get(analysis_id)["report"]["detection"]["boxes"]  # type: ignore[index]
        whites = [i for i, b in enumerate(boxes) if is_white_cell(b["class_name"])]
        others = [i for i, b in enumerate(boxes) if not is_white_cell(b["class_name"])]
        assert whites and others, [b["class_name"] for b in boxes]
        page = client.get("/smears").text  # the newest smear is shown with its white cells
        assert f"Smear {analysis_id}: smear.jpg" in page
        buttons = re.findall(rf'action="/analyses/{analysis_id}/cells/(\d+)/classify"', page)
        assert [int(i) for i in buttons] == whites
        for index in whites:
            assert (
                f'data-button="cell-{analysis_id}-{index}"' in page
                and f'id="cell-{analysis_id}-{index}"' in page
            )
        assert client.get(f"/smears?show={analysis_id}").text.count('data-testid="classify-cell"') == len(
            whites
        )

        token = csrf_of(client, "/smears")
        index = whites[0]
        headers = {"x-csrf-token": token, "hx-request": "true"}
        answer = client.post(f"/analyses/{analysis_id}/cells/{index}/classify", headers=headers)
        assert answer.status_code == 200, answer.text
        fragment = answer.text
        assert 'data-testid="cell-result"' in fragment and "<html" not in fragment
        crop = client.get(f"/analyses/{analysis_id}/cells/{index}.png")
        assert crop.headers["content-type"] == "image/png"
        original = smear.read_bytes()
        assert crop.content == crop_box(original, boxes[index])  # cut here, by the stored box
        with Image.open(io.BytesIO(crop.content)) as cut:
            box = boxes[index]
            assert cut.width >= box["x2"] - box["x1"] and cut.width < 640

        async def alone() -> Any:
            key = console_stack.keys["reviewer"]
            async with AsyncHemascopeClient(console_stack.gateway_address, api_key=key) as gateway:
                return await gateway.analyze(crop.content)

        direct = asyncio.run(alone()).classification
        shown = re.search(r'data-testid="cell-label">([^<]+)<', fragment)
        assert shown and shown.group(1) == direct.consensus_label
        # the cell's own reasons (not the caller's site status, which the calls in between may change)
        own = [r for r in direct.refer_reasons if r != UNVALIDATED_REASON]
        assert ('data-testid="cell-refer"' in fragment) == bool(own) or UNVALIDATED_REASON in fragment
        assert all(html.escape(r, quote=False) in fragment for r in own)

        check_refusals(client, f"/analyses/{analysis_id}/cells", index, [others[0], len(boxes), 10**6], token)
        assert client.get("/smears?show=abc").status_code == 400
    with TestClient(app, follow_redirects=False) as viewer:
        logged_in(viewer, console_stack.keys["viewer"])
        assert 'data-testid="classify-cell"' not in viewer.get(f"/smears?show={analysis_id}").text
        token = csrf_of(viewer, "/results")
        refused = viewer.post(
            f"/analyses/{analysis_id}/cells/{whites[0]}/classify", data={"csrf_token": token}
        )
        assert refused.status_code == 403
