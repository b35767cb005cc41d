"""The Models page compares two bundles side by side (TestClient, logged in through a real gateway)."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from console.app import create_app
from tests.bundle_fixtures import make_bundles
from tests.console_fixtures import ConsoleStack, console_settings


def rows_of(page: str, testid: str) -> list[str]:
    table = page.split(f'data-testid="{testid}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr class=\"(?:changed|same)\".*?</tr>", table, flags=re.S)


def test_two_bundles_are_compared_side_by_side_with_their_differences_marked(
    console_stack: ConsoleStack, tmp_path: Path
) -> None:
    models, reports = make_bundles(tmp_path)
    settings = console_settings(
        console_stack, f"sqlite:///{tmp_path / 'console.db'}", bundles_dir=models, reports_dir=reports
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
        client.post("/login", data={"api_key": console_stack.keys["viewer"], "csrf_token": token})
        models_page = client.get("/models").text
        assert 'data-testid="bundle-pick"' in models_page and 'action="/models/compare"' in models_page
        assert '<option value="lab-b" selected>' in models_page  # the first two are picked to start
        assert "detector-x" not in models_page

        page = client.get("/models/compare?a=lab-a&b=lab-b")
        assert page.status_code == 200, page.text
        text = page.text
        facts = rows_of(text, "card-facts")
        changed = [re.search(r'data-fact="([^"]+)"', r).group(1) for r in facts if 'class="changed"' in r]  # type: ignore[union-attr]
        assert changed == ["bundle version", "training sites", "training report"]
        assert "20270101T000000Z-0000beef" in text
        assert text.count('data-testid="model-card"') == 2
        assert "# Model card &lt;b&gt;lab B&lt;/b&gt;" in text and "<b>lab B</b>" not in text  # escaped
        assert "Held-out metrics (1047 images of the training sites)" in text  # lab A's card

        overall = rows_of(text, "overall")
        svm = next(r for r in overall if "<td>svm</td><td>accuracy</td>" in r)
        assert 'class="changed"' in svm and "&#9660; -0.050" in svm and "lower in lab-b" in svm
        logistic = next(r for r in overall if "<td>logistic_regression</td><td>accuracy</td>" in r)
        assert 'class="same"' in logistic and '<td class="diff same">=</td>' in logistic
        kmeans = next(r for r in overall if "<td>kmeans</td><td>accuracy</td>" in r)
        assert "only in lab-a" in kmeans
        per_class = [r for r in rows_of(text, "per-class") if 'class="changed"' in r and "kmeans" not in r]
        assert len(per_class) == 1 and "<td>myeloblast</td><td>F1</td>" in per_class[0]
        assert "&#9660; -0.100" in per_class[0]
        per_source = [r for r in rows_of(text, "per-source") if 'class="changed"' in r and "kmeans" not in r]
        assert len(per_source) == 1
        assert "<td>held-out test</td><td>johns-hopkins</td><td>svm</td><td>accuracy</td>" in per_source[0]
        assert "&#9650; +0.020" in per_source[0] and "higher in lab-b" in per_source[0]
        assert "<td>left out of training</td><td>munich</td>" in text

        only = client.get("/models/compare?a=lab-a&b=lab-b&changed=1").text
        assert 'name="changed" value="1" data-testid="only-changed" checked' in only
        assert all('class="changed"' in r for r in rows_of(only, "per-class"))
        assert len(rows_of(only, "per-class")) == 1 + sum("kmeans" in r for r in rows_of(text, "per-class"))
        assert rows_of(only, "card-facts") == facts  # the card's facts are all shown
        same = client.get("/models/compare?a=lab-a&b=lab-a&changed=1").text
        assert 'data-testid="overall"' not in same and same.count("No difference here.") == 3

        for query in ("a=lab-a&b=detector-x", "a=..%2Fmodels&b=lab-a", "a=lab-a", ""):
            assert client.get(f"/models/compare?{query}").status_code == 404, query
