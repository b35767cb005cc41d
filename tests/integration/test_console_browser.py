"""The console in a real browser (Debian's Chromium, headless, driven by Playwright) in front of a real
gateway and services: log in, upload and watch the cards fill in (htmx under the strict CSP), the Grad-CAM
overlay and its slider, a zip of cells and a cell explained again with another model and method, the
gallery's filters, a correction and the retraining export, a viewer refused, logging out, an admin's
evaluation job on the Jobs page with its report, and an accessibility check (axe-core) of every page.
Skipped only when Chromium is not installed (the accessibility test also when axe-core is not:
scripts/setup_a11y.sh). With HEMASCOPE_SCREENSHOT_DIR set (e.g. docs), the screenshots of docs/console.md
are written there."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.bundle_fixtures import make_bundles
from tests.console_fixtures import (
    BUNDLE,
    BatchResultFolder,
    ConsoleStack,
    LiveServer,
    console_settings,
    small_dataset,
)

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).resolve().parents[1] / "a11y" / "node_modules" / "axe-core" / "axe.min.js"

if not CHROMIUM.exists():
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium` (scripts/setup.sh does it "
        "when run as root)",
        allow_module_level=True,
    )

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright for this module only (overriding pytest-playwright's session-wide one, whose event loop
    would stay running in the main thread for the rest of the test run, where asyncio.run then fails)."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    """Plain contexts (the plugin's version is session-scoped on its own Playwright)."""
    return {"viewport": {"width": 1280, "height": 720}}


@pytest.fixture(scope="module")
def browser(playwright: Playwright, browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    """Debian's Chromium, headless; pytest-playwright's per-test contexts and pages run in it."""
    options = {**browser_type_launch_args, "executable_path": str(CHROMIUM), "headless": True}
    launched = playwright.chromium.launch(**options)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def console_url(
    console_stack: ConsoleStack,
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    batch_result: BatchResultFolder,
) -> Iterator[str]:
    """The console with a batch results root holding a real batch result, and one succeeded training job
    (id 1) whose bundle may be promoted (a copy of the served bundle: the page is only looked at)."""
    folder = tmp_path_factory.mktemp("console-browser")
    small_dataset(data_dir, folder / "data" / "lab")
    models, reports = make_bundles(tmp_path_factory.mktemp("bundles"))
    settings = console_settings(
        console_stack,
        f"sqlite:///{folder / 'console.db'}",
        data_root=folder / "data",
        jobs_dir=folder / "jobs",
        bundles_dir=models,
        reports_dir=reports,
        batch_results_root=batch_result.root,
    )
    app = create_app(settings)
    store = app.state.console.jobs.store
    job_id = store.create("train", "admin", {"dataset": "lab"}, [sys.executable, "-c", "pass"])
    assert store.claim_next().id == job_id and store.finish(job_id, "succeeded", 0)
    shutil.copytree(BUNDLE, settings.jobs_dir / str(job_id) / "bundle")
    with LiveServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> dict[str, Path]:
    folder = data_dir / "bloodcells-5class" / "val"
    return {name: sorted((folder / name).glob("*.jpg"))[0] for name in ("myeloblast", "seg_neutrophil")}


@pytest.fixture
def csp_errors(page: Page) -> list[str]:
    """Console messages about Content-Security-Policy violations on ``page``."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    return errors


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("HEMASCOPE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def log_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("who")).to_be_visible()


def analyse(page: Page, url: str, files: list[Path]) -> None:
    page.goto(f"{url}/analyse")
    page.set_input_files("#images", [str(f) for f in files])
    expect(page.locator("#chosen")).to_have_text(
        f"{len(files)} images chosen" if len(files) > 1 else "1 image chosen"
    )
    page.click("#upload-form button[type=submit]")
    expect(page.get_by_test_id("batch-count")).to_have_text(
        f"{len(files)} of {len(files)} analysed", timeout=300_000
    )


def test_a_reviewer_analyses_filters_corrects_exports_and_logs_out(
    page: Page,
    console_url: str,
    console_stack: ConsoleStack,
    cells: dict[str, Path],
    csp_errors: list[str],
    tmp_path: Path,
) -> None:
    log_in(page, console_url, console_stack.keys["reviewer"])
    analyse(page, console_url, list(cells.values()))
    cards = page.get_by_test_id("result-card")
    expect(cards).to_have_count(2)
    overlay = page.get_by_test_id("overlay").first
    expect(overlay).to_be_visible()
    assert overlay.evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.get_by_test_id("malignant")).to_have_count(1)
    screenshot(page, "console-analyse.png", tmp_path)
    slider = page.locator("input.opacity").first
    slider.fill("20")
    assert overlay.evaluate("img => getComputedStyle(img).opacity") == "0.2"

    page.goto(f"{console_url}/gallery")
    page.select_option("select[name=label]", "myeloblast")
    page.click(".filters button[type=submit]")
    expect(page.get_by_test_id("gallery-tile")).to_have_count(1)
    assert "label=myeloblast" in page.url
    screenshot(page, "console-gallery.png", tmp_path)

    page.get_by_test_id("gallery-tile").first.click()
    page.select_option("[data-testid=review-form] select[name=label]", "monocyte")
    page.fill("[data-testid=review-form] input[name=comment]", "nucleus looks monocytoid")
    page.click("[data-testid=review-form] button[type=submit]")
    history = page.get_by_test_id("review-history")
    expect(history).to_contain_text("corrected")
    expect(history).to_contain_text("monocyte")
    expect(history).to_contain_text("reviewer")

    page.goto(f"{console_url}/results?review=corrected")
    expect(page.get_by_test_id("result-row")).to_have_count(1)
    with page.expect_download() as download:
        page.get_by_test_id("export-corrected").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    images = [n for n in archive.namelist() if n != "labels.csv"]
    assert len(images) == 1 and images[0].startswith("monocyte/")
    assert archive.read(images[0]) == cells["myeloblast"].read_bytes()

    page.click("form.logout button")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(f"{console_url}/results")
    expect(page).to_have_url(re.compile(r"/login$"))
    assert csp_errors == []


PIXELS = """img => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    canvas.getContext("2d").drawImage(img, 0, 0);
    return canvas.toDataURL();
}"""


def zip_of(cells: dict[str, Path], folder: Path) -> Path:
    """The cells in a zip, in a folder of it, with the clutter an archiver adds."""
    path = folder / "cells.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, cell in cells.items():
            archive.write(cell, f"cells/{name}.jpg")
        archive.writestr("__MACOSX/cells/._myeloblast.jpg", b"resource fork")
    return path


def explain_again(card: Any, model: str, method: str, class_name: str = "") -> None:
    form = card.get_by_test_id("explain-form")
    form.get_by_label("Model", exact=True).select_option(model)
    form.get_by_label("Method", exact=True).select_option(method)
    form.get_by_label("Class", exact=True).select_option(class_name)
    form.get_by_role("button", name="Explain").click()


def test_a_reviewer_analyses_a_zip_and_explains_a_cell_again(
    page: Page,
    console_url: str,
    console_stack: ConsoleStack,
    cells: dict[str, Path],
    csp_errors: list[str],
    tmp_path: Path,
) -> None:
    log_in(page, console_url, console_stack.keys["reviewer"])
    page.goto(f"{console_url}/analyse")
    page.set_input_files("#images", [str(zip_of(cells, tmp_path))])
    expect(page.locator("#chosen")).to_have_text("1 zip chosen")
    page.click("#upload-form button[type=submit]")
    expect(page.get_by_test_id("batch-count")).to_have_text("2 of 2 analysed", timeout=300_000)
    cards = page.get_by_test_id("result-card")
    expect(cards).to_have_count(2)
    expect(cards.locator("header a")).to_have_text(["cells/myeloblast.jpg", "cells/seg_neutrophil.jpg"])

    card = cards.first
    caption = card.get_by_test_id("explanation")
    expect(caption).to_have_text("Grad-CAM: logistic_regression, gradcam, class myeloblast")
    overlay = card.get_by_test_id("overlay")
    before = overlay.evaluate(PIXELS)
    form = card.get_by_test_id("explain-form")
    form.get_by_label("Model", exact=True).select_option(
        "svm"
    )  # the SVM takes no gradients: those methods are off
    expect(form.locator("option[value=gradcam]")).to_be_disabled()
    expect(form.locator("option[value=ablationcam]")).to_be_enabled()
    explain_again(card, "logistic_regression", "gradcam++", "seg_neutrophil")
    expect(caption).to_have_text(
        "Grad-CAM: logistic_regression, gradcam++, class seg_neutrophil (asked for by reviewer)"
    )
    overlay = card.get_by_test_id("overlay")
    expect(overlay).to_have_attribute("src", re.compile(r"/overlay\.png\?revision=1$"))
    overlay.evaluate("img => img.decode()")
    assert overlay.evaluate(PIXELS) != before
    expect(card.get_by_test_id("consensus")).to_have_text("myeloblast")  # the classification stays
    card.locator("input.opacity").fill("30")
    assert overlay.evaluate("img => getComputedStyle(img).opacity") == "0.3"
    screenshot(page, "console-explain.png", tmp_path)

    page.reload()  # what was asked for is what the analysis shows now
    expect(cards.first.get_by_test_id("explanation")).to_contain_text("gradcam++, class seg_neutrophil")
    assert csp_errors == []


DROP = """([name, data]) => {
    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
    document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer}));
}"""


def test_a_viewer_browses_but_cannot_analyse_or_review(
    page: Page,
    console_url: str,
    console_stack: ConsoleStack,
    cells: dict[str, Path],
    csp_errors: list[str],
) -> None:
    log_in(page, console_url, console_stack.keys["reviewer"])
    page.goto(f"{console_url}/analyse")  # a file dropped on the drop zone is the one uploaded
    cell = cells["seg_neutrophil"]
    page.evaluate(DROP, [cell.name, base64.b64encode(cell.read_bytes()).decode()])
    expect(page.locator("#chosen")).to_have_text("1 image chosen")
    page.click("#upload-form button[type=submit]")
    expect(page.get_by_test_id("batch-count")).to_have_text("1 of 1 analysed", timeout=300_000)
    expect(page.get_by_test_id("result-card").locator("header a")).to_have_text(cell.name)
    detail = page.get_by_test_id("result-card").first.locator("header a").get_attribute("href")
    page.click("form.logout button")

    log_in(page, console_url, console_stack.keys["viewer"])
    expect(page.get_by_role("link", name="Analyse")).to_have_count(0)
    response = page.goto(f"{console_url}/analyse")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    page.goto(f"{console_url}{detail}")
    expect(page.get_by_test_id("consensus")).to_be_visible()
    expect(page.get_by_test_id("review-form")).to_have_count(0)
    expect(page.get_by_test_id("export-corrected")).to_have_count(0)
    response = page.goto(f"{console_url}/export/training.zip")
    assert response is not None and response.status == 403
    assert csp_errors == []


def test_a_smear_is_counted_and_the_models_page_compares_the_models(
    page: Page,
    console_url: str,
    console_stack: ConsoleStack,
    data_dir: Path,
    csp_errors: list[str],
    tmp_path: Path,
) -> None:
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    log_in(page, console_url, console_stack.keys["reviewer"])
    page.goto(f"{console_url}/smears")
    page.set_input_files("#smear-images", [str(data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg")])
    page.click("#smear-form button[type=submit]")
    expect(page.get_by_test_id("batch-count")).to_have_text("1 of 1 analysed", timeout=300_000)
    boxes = page.get_by_test_id("boxes")
    expect(boxes).to_be_visible()
    picture = page.locator(".overlay-stack.wide img.base")
    assert picture.evaluate("img => img.complete && img.naturalWidth > 0")
    assert boxes.evaluate("svg => svg.querySelectorAll('rect').length") > 0
    assert boxes.bounding_box() == picture.bounding_box()  # the layer lies exactly over the picture
    expect(page.get_by_test_id("cell-count")).to_contain_text("cells")
    page.get_by_test_id("boxes-toggle").uncheck()
    expect(boxes).to_be_hidden()
    page.get_by_test_id("boxes-toggle").check()
    expect(boxes).to_be_visible()
    page.goto(f"{console_url}/smears")
    white = page.locator("svg.boxes rect.white").first
    white.click()
    result = page.get_by_test_id("cell-result")
    expect(result).to_be_visible(timeout=120_000)
    expect(result).to_contain_text("White cell 1 of the smear")
    expect(page.get_by_test_id("cell-label")).not_to_be_empty()
    assert result.locator("img.cell-crop").evaluate("img => img.complete && img.naturalWidth > 0")
    assert "chosen" in (white.get_attribute("class") or "")
    screenshot(page, "console-smear.png", tmp_path)
    page.goto(f"{console_url}/models")
    expect(page.get_by_test_id("capabilities")).to_contain_text("logistic_regression")
    expect(page.get_by_test_id("services")).to_contain_text("detector: serving")
    page.click("[data-testid=bundle-pick] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/models/compare\?a=lab-a&b=lab-b$"))
    expect(page.locator("[data-testid=overall] tr.changed").first).to_be_visible()
    assert csp_errors == []


def run_evaluation(page: Page, url: str) -> None:
    """Starts an evaluation of training job 1's bundle (a copy of the served one; the bundles folder holds
    the comparison's two cards only) on the small dataset and waits for its metrics."""
    page.goto(f"{url}/jobs")
    form = page.get_by_test_id("start-evaluate")
    form.get_by_label("Bundle").select_option("job-1")
    form.get_by_label("Dataset").select_option("lab")
    form.get_by_role("button", name="Start evaluation").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.get_by_test_id("job-state")).to_have_text("succeeded", timeout=240_000)
    expect(page.get_by_test_id("job-report")).to_be_visible()


def test_an_admin_runs_an_evaluation_job_and_reads_its_report(
    page: Page, console_url: str, console_stack: ConsoleStack, csp_errors: list[str], tmp_path: Path
) -> None:
    log_in(page, console_url, console_stack.keys["admin"])
    run_evaluation(page, console_url)  # the page polls (htmx) until the job is done, then shows the report
    report = page.get_by_test_id("job-report")
    expect(report.locator("tr[data-model]")).to_have_count(5)
    expect(report.locator("tr[data-model=logistic_regression]")).to_be_visible()
    expect(page.get_by_test_id("job-log")).to_contain_text("macroF1")
    expect(page.get_by_test_id("cancel-form")).to_have_count(0)
    expect(page.get_by_test_id("job-command")).to_contain_text("hemascope evaluate --bundle")
    screenshot(page, "console-jobs.png", tmp_path)
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_test_id("job-row").first.get_by_test_id("job-state")).to_have_text("succeeded")
    expect(page.get_by_test_id("job-audit")).to_contain_text("job_started")
    page.click("form.logout button")

    log_in(page, console_url, console_stack.keys["reviewer"])
    expect(page.get_by_role("link", name="Jobs", exact=True)).to_have_count(0)
    response = page.goto(f"{console_url}/jobs")
    assert response is not None and response.status == 403
    assert csp_errors == []


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as loaded (WCAG 2.x A/AA rules and best practices)."""
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return list(result["violations"])


def describe(violations: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{v['impact']} {v['id']} ({v['help']}) at "
        + ", ".join(" ".join(n["target"]) for n in v["nodes"][:3])
        for v in violations
    )


@pytest.fixture
def axe_context(browser: Browser) -> Iterator[BrowserContext]:
    """A context for the accessibility checks only. It bypasses the Content-Security-Policy because the
    console's strict policy (script-src 'self') rightly refuses the injected axe-core script; the other
    tests keep the policy and assert that nothing is refused."""
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed at {AXE}: run scripts/setup_a11y.sh (npm ci)")
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 720})
    yield context
    context.close()


def smear_and_boxes(page: Page, url: str, data_dir: Path, check: Callable[[str], None]) -> None:
    """Checks the Smears page with a white cell classified and a batch with detected boxes."""
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    smear = data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg"
    page.set_input_files("#smear-images", [str(smear)])
    page.click("#smear-form button[type=submit]")
    expect(page.get_by_test_id("batch-count")).to_have_text("1 of 1 analysed", timeout=300_000)
    page.goto(f"{url}/smears")
    page.get_by_test_id("classify-cell").first.click()
    expect(page.get_by_test_id("cell-result")).to_be_visible(timeout=120_000)
    check("smears with a white cell classified")
    page.goto(f"{url}/analyse")
    page.set_input_files("#images", [str(smear)])
    page.get_by_test_id("detect").check()
    page.click("#upload-form button[type=submit]")
    expect(page.get_by_test_id("batch-count")).to_have_text("1 of 1 analysed", timeout=300_000)
    expect(page.get_by_test_id("boxes")).to_be_visible()
    check("batch with detected boxes")


def visit_site_and_batch_results(page: Page, url: str, check: Callable[[str], None]) -> None:
    """The Site page, a batch result opened from the list, and the list (each checked as loaded)."""
    page.goto(f"{url}/site")
    expect(page.get_by_test_id("site-status")).to_be_visible()
    check("site")
    page.goto(f"{url}/batch-results")
    page.get_by_role("link", name="lab-run").click()
    expect(page.get_by_test_id("batch-row").first).to_be_visible()
    expect(page.get_by_test_id("batch-error")).to_have_count(1)
    check("batch result")
    page.goto(f"{url}/batch-results")
    check("batch results")


def test_every_page_passes_the_axe_core_accessibility_checks(
    axe_context: BrowserContext,
    console_url: str,
    console_stack: ConsoleStack,
    cells: dict[str, Path],
    data_dir: Path,
) -> None:
    page = axe_context.new_page()
    checked: dict[str, list[dict[str, Any]]] = {}

    def check(name: str) -> None:
        expect(page.locator("main")).to_be_visible()
        checked[name] = axe_violations(page)

    page.goto(f"{console_url}/login")
    check("login")
    log_in(page, console_url, console_stack.keys["reviewer"])
    page.goto(f"{console_url}/analyse")
    check("analyse")
    analyse(page, console_url, [cells["myeloblast"]])
    expect(page.get_by_test_id("overlay")).to_be_visible()
    assert re.search(r"/batches/\d+$", page.url)
    check("batch with its cards")
    detail = page.get_by_test_id("result-card").first.locator("header a").get_attribute("href")
    explain_again(page.get_by_test_id("result-card").first, "xgboost", "ablationcam")
    expect(page.get_by_test_id("explanation")).to_contain_text("xgboost, ablationcam", timeout=120_000)
    check("card explained again")
    page.goto(f"{console_url}/results")
    expect(page.get_by_test_id("result-row").first).to_be_visible()
    check("results table")
    page.goto(f"{console_url}/gallery")
    expect(page.get_by_test_id("gallery-tile").first).to_be_visible()
    check("gallery")
    page.goto(f"{console_url}{detail}")
    expect(page.get_by_test_id("review-form")).to_be_visible()
    check("detail with the review form")
    page.goto(f"{console_url}/smears")
    check("smears")
    smear_and_boxes(page, console_url, data_dir, check)
    page.goto(f"{console_url}/models")
    check("models")
    page.get_by_label("Second bundle").select_option("lab-b")
    page.click("[data-testid=bundle-pick] button[type=submit]")
    expect(page.get_by_test_id("overall")).to_be_visible()
    for card in page.get_by_test_id("model-card").all():
        card.locator("summary").click()
    check("bundles compared")
    visit_site_and_batch_results(page, console_url, check)
    page.click("form.logout button")
    log_in(page, console_url, console_stack.keys["admin"])
    page.goto(f"{console_url}/jobs")
    check("jobs")
    page.goto(f"{console_url}/jobs/1/promote")
    expect(page.get_by_test_id("promote-form")).to_be_visible()
    check("promotion confirmation")
    run_evaluation(page, console_url)
    check("job with its report")

    assert set(checked) == {
        "login",
        "analyse",
        "batch with its cards",
        "card explained again",
        "results table",
        "gallery",
        "detail with the review form",
        "smears",
        "smears with a white cell classified",
        "batch with detected boxes",
        "models",
        "site",
        "batch results",
        "batch result",
        "jobs",
        "promotion confirmation",
        "job with its report",
        "bundles compared",
    }
    # None at all, whatever their impact (critical, serious, moderate or minor): each is listed with its
    # rule and elements when one appears.
    report = "\n".join(f"{name}: {describe(v)}" for name, v in checked.items() if v)
    assert not report, f"accessibility violations:\n{report}"
