"""The console's Batch results page over Starlette's TestClient, reading a real ``hemascope batch analyze``
result (tests.console_fixtures.batch_result): the listing, the summary counts against the command's own
summary and the Parquet files, the filters, pagination and CSV export, and the allow-listed root: names,
symlinks (of folders and of part files) that lead outside it are refused."""

from __future__ import annotations

import csv
import io
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from starlette.testclient import TestClient

from console import routes_batch_results
from console.batch_results import NotABatchResult, read_result
from tests.console_fixtures import BatchResultFolder, ConsoleStack
from tests.integration.test_console import client_for, login


@pytest.fixture
def results(batch_result: BatchResultFolder) -> dict[str, object]:
    rows = pads.dataset(batch_result.root / batch_result.name, format="parquet").to_table().to_pylist()
    return {"rows": sorted(rows, key=lambda r: r["path"])}


def viewer(stack: ConsoleStack, tmp_path: Path, root: Path | None) -> TestClient:
    client = client_for(stack, f"sqlite:///{tmp_path / 'console.db'}", batch_results_root=root)
    return login(client, stack.keys["viewer"])


def count(page: str, test_id: str) -> int:
    found = re.search(rf'data-testid="{test_id}">(\d+)<', page)
    assert found, f"no {test_id} on the page"
    return int(found.group(1))


def test_a_viewer_lists_and_opens_a_batch_result_whose_counts_match_the_command(
    console_stack: ConsoleStack, batch_result: BatchResultFolder, results: dict[str, object], tmp_path: Path
) -> None:
    summary = batch_result.summary
    rows: list[dict[str, object]] = results["rows"]  # type: ignore[assignment]
    with viewer(console_stack, tmp_path, batch_result.root) as client:
        listing = client.get("/batch-results")
        assert listing.status_code == 200
        assert '<a href="/batch-results/lab-run">lab-run</a>' in listing.text
        page = client.get("/batch-results/lab-run").text
    assert count(page, "count-analysed") == summary["analysed"] == len(rows) == 10
    assert count(page, "count-errors") == summary["errors"] == 1
    assert count(page, "count-malignant") == summary["malignant"]
    assert count(page, "count-referred") == summary["referred"]
    per_class = summary["per_class"]
    assert isinstance(per_class, dict)
    for name, n in per_class.items():
        assert re.search(rf'<tr data-class="{name}"><td>{name}</td><td>{n}</td></tr>', page)
    assert page.count('data-testid="batch-row"') == len(rows)
    assert 'data-testid="batch-error"' in page and "not-an-image.jpg" in page


def test_filters_pages_and_the_csv_export_keep_the_same_rows(
    console_stack: ConsoleStack,
    batch_result: BatchResultFolder,
    results: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows: list[dict[str, object]] = results["rows"]  # type: ignore[assignment]
    label = Counter(str(r["label"]) for r in rows).most_common(1)[0][0]
    expected = {
        "label=" + label: [r for r in rows if r["label"] == label],
        "flag=malignant": [r for r in rows if r["malignant"]],
        "flag=not_malignant": [r for r in rows if not r["malignant"]],
        "referral=referred": [r for r in rows if r["refer"]],
        "referral=not_referred": [r for r in rows if not r["refer"]],
        "min_confidence=60": [r for r in rows if float(r["probability"]) >= 0.6],  # type: ignore[arg-type]
    }
    monkeypatch.setattr(routes_batch_results, "PAGE_SIZE", 3)
    with viewer(console_stack, tmp_path, batch_result.root) as client:
        for query, kept in expected.items():
            page = client.get(f"/batch-results/lab-run?{query}").text
            assert count(page, "batch-matching") == len(kept), query
            assert page.count('data-testid="batch-row"') == min(3, len(kept)), query
            export = client.get(f"/batch-results/lab-run/export.csv?{query}")
            assert export.headers["content-type"].startswith("text/csv")
            table = list(csv.DictReader(io.StringIO(export.text)))
            assert [r["path"] for r in table] == [r["path"] for r in kept], query
        paths = []
        for number in range(1, 5):
            page = client.get(f"/batch-results/lab-run?page={number}").text
            paths += re.findall(r'data-testid="batch-row" data-label="[^"]*">\s*<td>([^<]+)</td>', page)
        assert paths == [r["path"] for r in rows]  # 3 + 3 + 3 + 1, every row once, in path order
        table = list(csv.DictReader(io.StringIO(client.get("/batch-results/lab-run/export.csv").text)))
    assert [r["label"] for r in table] == [r["label"] for r in rows]
    assert list(table[0]) == list(routes_batch_results.CSV_COLUMNS)


def test_nothing_outside_the_root_is_listed_or_opened(
    console_stack: ConsoleStack, batch_result: BatchResultFolder, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(batch_result.root / batch_result.name, outside / "elsewhere")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(outside / "elsewhere", target_is_directory=True)
    (root / "parts-linked").mkdir()
    for part in sorted((outside / "elsewhere").glob("part-*.parquet")):
        (root / "parts-linked" / part.name).symlink_to(part)
    shutil.copytree(batch_result.root / batch_result.name, root / "inside")
    with viewer(console_stack, tmp_path, root) as client:
        listing = client.get("/batch-results").text
        assert "/batch-results/inside" in listing
        assert "linked" not in listing
        # (a literal ".." is folded away by the client's URL normalisation; the escaped forms reach the app)
        for name in ("linked", "parts-linked", "%2e%2e", "..%2Foutside", "inside%2F..", "missing"):
            response = client.get(f"/batch-results/{name}")
            assert response.status_code == 404, name
            assert client.get(f"/batch-results/{name}/export.csv").status_code == 404, name
        assert client.get("/batch-results/inside").status_code == 200
    for name in ("..", "../outside/elsewhere", str(outside / "elsewhere"), "inside/..", ".", "", "linked"):
        with pytest.raises(NotABatchResult):
            read_result(root, name)


def test_without_a_root_the_page_says_so_and_the_login_is_required(
    console_stack: ConsoleStack, batch_result: BatchResultFolder, tmp_path: Path
) -> None:
    with viewer(console_stack, tmp_path, None) as client:
        assert 'data-testid="batch-results-off"' in client.get("/batch-results").text
        assert client.get("/batch-results/lab-run").status_code == 404
    anonymous = client_for(console_stack, f"sqlite:///{tmp_path / 'other.db'}", batch_results_root=tmp_path)
    with anonymous:
        assert anonymous.get("/batch-results").headers["location"] == "/login"
        assert anonymous.get(f"/batch-results/{batch_result.name}").headers["location"] == "/login"


def test_without_pyarrow_the_page_says_what_to_install(
    console_stack: ConsoleStack,
    batch_result: BatchResultFolder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # an installation without the console extra
    with viewer(console_stack, tmp_path, batch_result.root) as client:
        listing = client.get("/batch-results")
        opened = client.get("/batch-results/lab-run")
        exported = client.get("/batch-results/lab-run/export.csv")
    assert listing.status_code == 200 and "hemascope[console]" in listing.text
    assert 'data-testid="batch-result-row"' not in listing.text
    assert opened.status_code == exported.status_code == 503
    assert "needs pyarrow" in opened.text


def test_a_result_is_read_once_until_a_rerun_adds_parts(
    console_stack: ConsoleStack,
    batch_result: BatchResultFolder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "root"
    shutil.copytree(batch_result.root / batch_result.name, root / "run")
    first = read_result(root, "run")
    assert read_result(root, "run") is first
    for part in sorted((root / "run").glob("part-*.parquet")):
        shutil.copy(part, part.with_name(part.name.replace("part-", "part-again-")))
    again = read_result(root, "run")
    assert again is not first and again.analysed == 2 * first.analysed
    monkeypatch.setattr(routes_batch_results, "ERRORS_SHOWN", 0)
    with viewer(console_stack, tmp_path, root) as client:
        page = client.get("/batch-results/run").text
    assert count(page, "count-errors") == 1 and 'data-testid="batch-error"' not in page
    assert "The first 0 of 1" in page
