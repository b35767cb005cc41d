"""The choice of the model, class and CAM method that explain a cell, over Starlette's TestClient in front of
a real gateway and services: chosen on the Analyse form for a batch, and asked for again on one analysed
cell (which replaces its shown overlay and keeps its classification); both checked against the gateway's
capabilities, for reviewers only, with the CSRF token; what the gateway refuses is said, not a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from console.app import create_app
from console.settings import ConsoleSettings
from console.store import ResultStore
from hemascope.client import HemascopeClient
from tests.console_fixtures import ConsoleStack, extra_gateway
from tests.integration.test_console import client_for, csrf_of, login, wait_batch

CLASSIFICATION = ("label", "confidence", "agreement", "malignant_probability", "malignant", "refer")


@pytest.fixture(scope="module")
def cell(data_dir: Path) -> bytes:
    return sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0].read_bytes()


def store_of(client: TestClient) -> ResultStore:
    store: ResultStore = client.app.state.console.store  # type: ignore[attr-defined]
    return store


def analyse(client: TestClient, cell: bytes, **choice: str) -> Any:
    data = {"csrf_token": csrf_of(client, "/analyse"), "explain": "on"} | choice
    return client.post("/analyse", data=data, files=[("images", ("cell.jpg", cell, "image/jpeg"))])


def analysed(client: TestClient, response: Any) -> int:
    assert response.status_code == 303, response.text
    page = wait_batch(client, response.headers["location"], 1)
    return int(re.findall(r'data-analysis="(\d+)"', page)[0])


def explain(client: TestClient, analysis_id: int, token: str, htmx: bool = False, **choice: str) -> Any:
    headers = {"hx-request": "true", "x-csrf-token": token} if htmx else {}
    data = {"csrf_token": token} | choice
    return client.post(f"/analyses/{analysis_id}/explain", data=data, headers=headers)


def test_the_analyse_form_offers_the_gateways_choices_and_a_batch_is_explained_as_chosen(
    console_stack: ConsoleStack, tmp_path: Path, cell: bytes
) -> None:
    with client_for(console_stack, f"sqlite:///{tmp_path / 'console.db'}") as client:
        login(client, console_stack.keys["reviewer"])
        with HemascopeClient(
            console_stack.gateway_address, api_key=console_stack.keys["reviewer"]
        ) as gateway:
            caps = gateway.capabilities(timeout=30)
        page = client.get("/analyse").text
        assert 'data-testid="explain-choice"' in page and "<legend>Explain with</legend>" in page
        for model in caps.models:
            assert f'<option value="{model.name}">{model.name}</option>' in page
        for name in caps.classes:
            assert f'<option value="{name}">{name}</option>' in page
        logistic = next(m for m in caps.models if m.name == "logistic_regression")
        assert "gradcam++" in logistic.explain_methods
        assert 'value="gradcam" data-models="logistic_regression"' in page  # the models each method suits

        refused = {
            "unknown model": ({"explain_model": "resnet"}, "Explain with one of the models"),
            "unknown class": ({"explain_class": "platelet"}, "Explain one of the classes"),
            "unknown method": ({"explain_method": "scorecam"}, "The methods the models accept are"),
            "method the model lacks": (
                {"explain_model": "svm", "explain_method": "gradcam"},
                "The methods svm accepts are ablationcam, not &#39;gradcam&#39;",
            ),
        }
        for case, (choice, message) in refused.items():
            response = analyse(client, cell, **choice)
            assert response.status_code == 400, case
            assert message in response.text, (case, response.text)
        assert client.get("/export/results.json").json() == []  # nothing was analysed

        choice = {
            "explain_model": "logistic_regression",
            "explain_class": "basophil",
            "explain_method": "gradcam++",
        }
        analysis_id = analysed(client, analyse(client, cell, **choice))
        row = store_of(client).get(analysis_id)
        assert row is not None and row["status"] == "done", row
        explanation = row["report"]["explanation"]
        assert (explanation["model"], explanation["class_name"], explanation["method"]) == (
            "logistic_regression",
            "basophil",
            "gradcam++",
        )
        assert row["label"] == "myeloblast"  # the class explained is not the class found
        detail = client.get(f"/analyses/{analysis_id}").text
        assert "Grad-CAM: logistic_regression, gradcam++, class basophil" in detail


def test_a_reviewer_explains_a_stored_cell_again_and_its_classification_stays(
    console_stack: ConsoleStack, tmp_path: Path, cell: bytes
) -> None:
    app_url = f"sqlite:///{tmp_path / 'console.db'}"
    with client_for(console_stack, app_url) as client, client_for(console_stack, app_url) as viewer:
        login(client, console_stack.keys["reviewer"])
        analysis_id = analysed(client, analyse(client, cell))
        store = store_of(client)
        before = store.get(analysis_id)
        assert before is not None
        first_overlay = store.blob(analysis_id, "overlay_png")
        assert before["report"]["explanation"]["model"] == "logistic_regression"  # the gateway's default
        detail = client.get(f"/analyses/{analysis_id}").text
        assert (
            'data-testid="explain-form"' in detail and f'hx-post="/analyses/{analysis_id}/explain"' in detail
        )
        token = csrf_of(client, f"/analyses/{analysis_id}")

        # without htmx: a form post, then the detail page with the new overlay
        response = explain(
            client, analysis_id, token, explain_model="logistic_regression", explain_method="gradcam++"
        )
        assert response.status_code == 303 and response.headers["location"] == f"/analyses/{analysis_id}"
        after = store.get(analysis_id)
        assert after is not None
        explanation = after["report"]["explanation"]
        assert (explanation["model"], explanation["method"], explanation["class_name"]) == (
            "logistic_regression",
            "gradcam++",
            before["label"],
        )
        assert explanation["revision"] == 1 and explanation["by"] == "reviewer"
        second_overlay = store.blob(analysis_id, "overlay_png")
        assert second_overlay and second_overlay != first_overlay
        for column in CLASSIFICATION:
            assert after[column] == before[column], column
        for part in ("votes", "probabilities", "refer_reasons", "model_versions"):
            assert after["report"][part] == before["report"][part], part
        detail = client.get(f"/analyses/{analysis_id}").text
        assert "Grad-CAM: logistic_regression, gradcam++, class myeloblast (asked for by reviewer)" in detail
        assert f"/analyses/{analysis_id}/overlay.png?revision=1" in detail  # a new address: no stale cache
        assert client.get(f"/analyses/{analysis_id}/overlay.png").content == second_overlay

        # with htmx: the card's picture comes back, with another model and a named class
        response = explain(
            client,
            analysis_id,
            token,
            htmx=True,
            explain_model="xgboost",
            explain_class="seg_neutrophil",
            explain_method="ablationcam",
        )
        assert response.status_code == 200, response.text
        fragment = response.text
        assert fragment.lstrip().startswith(f'<div class="picture" id="picture-{analysis_id}">')
        assert "Grad-CAM: xgboost, ablationcam, class seg_neutrophil" in fragment
        assert "overlay.png?revision=2" in fragment and 'class="opacity"' in fragment
        assert 'data-testid="explain-form"' in fragment
        assert store.blob(analysis_id, "overlay_png") not in (first_overlay, second_overlay)
        batch_page = client.get(f"/batches/{before['batch_id']}").text  # a reload shows the same
        assert "Grad-CAM: xgboost, ablationcam, class seg_neutrophil" in batch_page

        check_refusals(client, viewer, console_stack, analysis_id, token)
        assert store.get(analysis_id)["report"]["explanation"]["revision"] == 2  # type: ignore[index]


def check_refusals(
    client: TestClient, viewer: TestClient, stack: ConsoleStack, analysis_id: int, token: str
) -> None:
    """Choices the gateway does not offer are 400 (with htmx the message is swapped in), the CSRF token is
    needed, and a viewer sees the stored overlay without the form and is refused."""
    batch_id = store_of(client).get(analysis_id)["batch_id"]  # type: ignore[index]
    # choices the gateway does not offer: 400 (with htmx the message is swapped in), nothing changes
    for choice in (
        {"explain_model": "resnet"},
        {"explain_class": "platelet"},
        {"explain_model": "svm", "explain_method": "gradcam"},
    ):
        response = explain(client, analysis_id, token, False, **choice)
        assert response.status_code == 400, choice
        assert 'data-testid="explain-problem"' in response.text
    response = explain(client, analysis_id, token, htmx=True, explain_method="scorecam")
    assert response.status_code == 200 and "The methods the models accept are" in response.text

    # the CSRF token is needed; a viewer sees the stored overlay without the form, and is refused
    assert client.post(f"/analyses/{analysis_id}/explain", data={}).status_code == 403
    forged = explain(client, analysis_id, "forged", explain_method="gradcam")
    assert forged.status_code == 403
    login(viewer, stack.keys["viewer"])
    page = viewer.get(f"/analyses/{analysis_id}").text
    assert 'data-testid="overlay"' in page and 'data-testid="explain-form"' not in page
    assert 'data-testid="explain-form"' not in viewer.get(f"/batches/{batch_id}").text
    viewer_token = csrf_of(viewer, f"/analyses/{analysis_id}")
    assert explain(viewer, analysis_id, viewer_token, explain_method="gradcam").status_code == 403
    assert explain(client, 99999, token).status_code == 404


@pytest.fixture
def svm_gateway(console_stack: ConsoleStack, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A second gateway over the same services whose default explain model is the SVM (which gradient
    methods cannot explain), with a caller key and a console users file naming it as a reviewer."""
    with extra_gateway(
        console_stack, tmp_path, "svm-lab", "svm-reviewer", "reviewer", explain_default_model="svm"
    ) as made:
        yield made


def test_an_explanation_the_gateway_refuses_is_said_and_nothing_changes(
    svm_gateway: tuple[str, str, Path], tmp_path: Path, cell: bytes
) -> None:
    address, key, users = svm_gateway
    settings = ConsoleSettings(  # type: ignore[call-arg]
        gateway_address=address, users_file=users, database_url=f"sqlite:///{tmp_path / 'c.db'}"
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        login(client, key)
        token = csrf_of(client, "/analyse")
        files = [("images", ("cell.jpg", cell, "image/jpeg"))]
        analysis_id = analysed(client, client.post("/analyse", data={"csrf_token": token}, files=files))
        before = store_of(client).get(analysis_id)
        assert before is not None and "explanation" not in before["report"]
        # the console lets the gateway's default model take any method some model accepts; the gateway's
        # default (the SVM) cannot be explained by gradients, and the gateway says so
        response = explain(client, analysis_id, token, explain_method="gradcam")
        assert response.status_code == 400, re.findall(r'explain-problem">([^<]+)<', response.text)
        assert "The gateway did not explain the cell" in response.text
        response = explain(client, analysis_id, token, htmx=True, explain_method="gradcam")
        assert response.status_code == 200
        problem = re.search(r'data-testid="explain-problem">([^<]+)<', response.text)
        assert problem and "The gateway did not explain the cell" in problem.group(1)
        assert store_of(client).get(analysis_id) == before
