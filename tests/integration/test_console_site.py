"""The console's Site page over Starlette's TestClient in front of the real gateway and services: it shows
the logged-in caller's own site status as GetCapabilities reports it for that caller's key (and follows it
when the caller analyses an image), says what the status means, and says so when the gateway is away."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from console.app import create_app
from console.routes_site import MEANINGS
from console.sessions import COOKIE_NAME
from console.settings import ConsoleSettings
from console.users import User
from hemascope.client import HemascopeClient
from tests.console_fixtures import ConsoleStack, extra_gateway
from tests.integration.test_console import client_for, login


def shown(page: str, test_id: str) -> str:
    found = re.search(rf'data-testid="{test_id}"[^>]*>([^<]*)<', page)
    assert found, f"no {test_id} on the page"
    return html.unescape(found.group(1)).strip()


def test_the_site_page_shows_the_callers_own_status_from_the_gateway(
    console_stack: ConsoleStack, data_dir: Path, tmp_path: Path
) -> None:
    key = console_stack.keys["viewer"]
    cell = sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0]
    console = login(client_for(console_stack, f"sqlite:///{tmp_path / 'c.db'}"), key)
    with HemascopeClient(console_stack.gateway_address, api_key=key) as gateway, console:
        before = gateway.capabilities(timeout=30).site
        page = console.get("/site").text
        assert shown(page, "site-status") == before.status
        assert shown(page, "site-meaning") == MEANINGS[before.status]
        assert shown(page, "site-share") == f"{round(before.atypical_share * 100)}%"
        assert shown(page, "site-window") == f"{before.window_images} of {before.window}"
        assert shown(page, "site-flag-share") == f"{round(before.flag_share * 100)}%"
        assert int(shown(page, "site-seen")) == before.images_seen
        assert 'data-testid="site-problem"' not in page

        answer = gateway.analyze(cell, timeout=120)
        after = gateway.capabilities(timeout=30).site
        assert after.images_seen == before.images_seen + 1
        page = console.get("/site").text
    assert int(shown(page, "site-seen")) == after.images_seen == answer.site.images_seen
    assert shown(page, "site-window") == f"{after.window_images} of {after.window}"
    assert shown(page, "site-status") == after.status
    flagged = after.status == "unvalidated site"
    assert shown(page, "site-flag").startswith("flagged" if flagged else ("cleared", "not flagged"))


def test_another_callers_status_is_its_own_and_a_missing_gateway_is_said(
    console_stack: ConsoleStack, tmp_path: Path
) -> None:
    reviewer = console_stack.keys["reviewer"]
    with HemascopeClient(console_stack.gateway_address, api_key=reviewer) as gateway:
        mine = gateway.capabilities(timeout=30).site
    with login(client_for(console_stack, f"sqlite:///{tmp_path / 'c.db'}"), reviewer) as console:
        assert int(shown(console.get("/site").text, "site-seen")) == mine.images_seen
    away = client_for(console_stack, f"sqlite:///{tmp_path / 'd.db'}", gateway_address="127.0.0.1:1")
    with away:
        assert away.get("/site").headers["location"] == "/login"
        sessions = away.app.state.console.sessions  # type: ignore[attr-defined]
        session = sessions.new(User("viewer", "viewer"), api_key=console_stack.keys["viewer"])
        away.cookies.set(COOKIE_NAME, sessions.cookie_value(session))
        page = away.get("/site")
    assert page.status_code == 200
    assert "The gateway did not answer (UNAVAILABLE)" in shown(page.text, "site-problem")
    assert 'data-testid="site-status"' not in page.text


def degraded(cell: Path) -> bytes:
    """The cell as a far-away scanner might take it: a quarter of the resolution, noisy, heavily
    compressed (an acquisition the bundle's reference never saw)."""
    image = Image.open(cell).convert("RGB")
    small = image.resize((image.width // 4, image.height // 4)).resize(image.size)
    pixels = np.asarray(small, dtype=np.float64)
    noisy = pixels + np.random.default_rng(0).normal(0, 40, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=5)
    return out.getvalue()


@pytest.fixture
def strict_gateway(console_stack: ConsoleStack, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A second gateway over the same services whose drift monitor judges each caller on its latest image
    alone (window 1), so that one atypical image flags the caller and one typical image clears it; with a
    caller key and a console users file naming it."""
    with extra_gateway(
        console_stack,
        tmp_path,
        "far-site",
        "far",
        "viewer",
        site_window=1,
        site_min_images=1,
        site_flag_share=0.5,
        site_clear_share=0.25,
    ) as made:
        yield made


def test_a_flagged_site_is_shown_flagged_with_what_it_means_and_then_cleared(
    strict_gateway: tuple[str, str, Path], data_dir: Path, tmp_path: Path
) -> None:
    address, key, users = strict_gateway
    cell = sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0]
    settings = ConsoleSettings(  # type: ignore[call-arg]
        gateway_address=address, users_file=users, database_url=f"sqlite:///{tmp_path / 'c.db'}"
    )
    console = login(TestClient(create_app(settings), follow_redirects=False), key)
    with HemascopeClient(address, api_key=key) as gateway, console:
        answer = gateway.analyze(degraded(cell), timeout=120)
        assert answer.site.status == "unvalidated site"
        page = console.get("/site").text
        assert shown(page, "site-flag") == "flagged: unvalidated site"
        assert shown(page, "site-meaning") == MEANINGS["unvalidated site"]
        assert "every malignant call is marked unconfirmed" in shown(page, "site-meaning")
        assert shown(page, "site-share") == "100%"
        assert shown(page, "site-window") == "1 of 1"
        answer = gateway.analyze(cell, timeout=120)
        assert answer.site.status == "consistent"
        page = console.get("/site").text
    assert shown(page, "site-flag") == "cleared: validated acquisition"
    assert shown(page, "site-share") == "0%"
