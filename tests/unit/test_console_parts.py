"""The console's parts without a gateway: the users file, sessions, upload names, the store's restart
rule and how a gateway report becomes stored columns."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import console as console_package
from console import sessions
from console.analysis import BatchRunner, report_values, store_boxes_picture
from console.app import create_app
from console.archives import BadArchive, TooManyMembers, is_zip, read_zip, skipped
from console.cells import NoSuchCell, crop_box, white_cell_box, white_ordinal
from console.explain import BadChoice, CapabilitiesCache, ExplainChoice, ExplainChoices
from console.images import RejectedUpload, check_upload, probe_upload, safe_name, safe_path
from console.sessions import SessionStore
from console.settings import ConsoleSettings
from console.store import ResultStore, make_engine
from console.users import User, UserDirectory, add_user, hash_key, role_allows
from console.web import make_templates
from hemascope.client.stubs import analysis_pb2
from hemascope.errors import ConfigurationError
from tests.conftest import encode


def test_roles_include_the_ones_below() -> None:
    assert role_allows("admin", "reviewer") and role_allows("reviewer", "viewer")
    assert not role_allows("viewer", "reviewer") and not role_allows("reviewer", "admin")


def test_the_users_file_holds_hashes_is_reread_and_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    directory = UserDirectory(path)
    assert directory.lookup("hsk_a") is None  # no file: nobody
    add_user(path, "Ann Lee", "reviewer", "hsk_a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "hsk_a" not in path.read_text() and hash_key("hsk_a") in path.read_text()
    assert directory.lookup("hsk_a") == User("Ann Lee", "reviewer")
    assert directory.lookup("hsk_b") is None
    add_user(path, "bob", "viewer", "hsk_b")
    assert directory.lookup("hsk_b") == User("bob", "viewer")  # re-read after the change
    path.write_text(path.read_text() + "{not json\n")
    assert directory.lookup("hsk_a") is None  # a malformed file lets nobody in
    with pytest.raises(ConfigurationError, match="line 3"):
        UserDirectory(path)
    for record, message in (
        ({"name": "x", "role": "owner", "key_hash": hash_key("k")}, "role"),
        ({"name": "../x", "role": "viewer", "key_hash": hash_key("k")}, "name"),
        ({"name": "x", "role": "viewer", "key_hash": "sha256:12"}, "64 hex"),
        ({"name": "x", "role": "viewer"}, "key_hash"),
    ):
        path.write_text(json.dumps(record) + "\n")
        with pytest.raises(ConfigurationError, match=message):
            UserDirectory(path)


def test_one_bundles_folder_for_the_models_and_jobs_pages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Models page's comparison and the Jobs page's bundles come from one setting, BUNDLES_DIR; the
    environment's former name BUNDLES_ROOT still sets it, and BUNDLES_DIR wins when both are given."""
    fields = ConsoleSettings.model_fields
    assert "bundles_dir" in fields and "bundles_root" not in fields
    for name in ("BUNDLES_DIR", "BUNDLES_ROOT"):
        monkeypatch.delenv(f"HEMASCOPE_CONSOLE_{name}", raising=False)
    monkeypatch.setenv("HEMASCOPE_CONSOLE_BUNDLES_ROOT", str(tmp_path / "old"))
    assert ConsoleSettings().bundles_dir == tmp_path / "old"
    monkeypatch.setenv("HEMASCOPE_CONSOLE_BUNDLES_DIR", str(tmp_path / "new"))
    assert ConsoleSettings().bundles_dir == tmp_path / "new"
    assert ConsoleSettings(bundles_dir=tmp_path / "given").bundles_dir == tmp_path / "given"


def test_sessions_are_signed_ids_that_end(tmp_path: Path) -> None:
    now = [1000.0]
    store = SessionStore(b"s" * 32, max_age_s=60, clock=lambda: now[0])
    session = store.new(User("ann", "viewer"), "hsk_secret")
    cookie = store.cookie_value(session)
    assert "hsk_secret" not in cookie and session.session_id in cookie
    assert store.from_cookie(cookie) is session
    assert store.from_cookie(session.session_id) is None  # unsigned
    assert SessionStore(b"t" * 32, 60).from_cookie(cookie) is None  # another secret
    now[0] += 61
    assert store.from_cookie(cookie) is None  # ended in the store, whatever the cookie's own age


def test_anonymous_sessions_are_capped_and_short_lived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_ANONYMOUS", 3)
    now = [0.0]
    store = SessionStore(b"s" * 32, max_age_s=10**6, clock=lambda: now[0])
    user = store.new(User("ann", "viewer"), "hsk_k")
    forms = [store.new() for _ in range(5)]
    alive = [s for s in forms if store.from_cookie(store.cookie_value(s)) is not None]
    assert alive == forms[-3:]  # the oldest login forms went first
    assert store.from_cookie(store.cookie_value(user)) is user  # logged-in sessions are never evicted
    now[0] += sessions.ANONYMOUS_MAX_AGE_S + 1
    assert all(store.from_cookie(store.cookie_value(s)) is None for s in forms)
    assert store.from_cookie(store.cookie_value(user)) is user


def test_names_are_reduced_to_safe_characters() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\x\\..\\cell 1.jpg") == "cell_1.jpg"
    assert safe_name("...hidden") == "hidden"
    assert safe_name("") == "image"
    assert safe_name("<img src=x>.png") == "_img_src_x_.png"


def test_paths_in_a_zip_are_display_names_only() -> None:
    assert safe_path("../../etc/passwd.jpg") == "etc/passwd.jpg"
    assert safe_path("/abs/./cells\\a b.jpg") == "abs/cells/a_b.jpg"
    assert safe_path("../..") == "image"
    assert safe_path("d/" + "x" * 300 + ".jpg").endswith(".jpg") and len(safe_path("x" * 300)) == 255
    assert [n for n in ("a/", "__MACOSX/._a.jpg", "c/.DS_Store", ".git/x.jpg") if not skipped(n)] == []
    assert not skipped("../x.jpg") and not skipped("./cells/a.jpg")


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_is_read_on_its_content_within_its_limits() -> None:
    data = _zip({"a.jpg": b"a" * 10, "b/c.png": b"c" * 20, ".DS_Store": b"x"})
    assert is_zip(data) and not is_zip(b"\xff\xd8\xff\xe0") and is_zip(_zip({}))
    members, errors = read_zip(data, max_members=2, max_member_bytes=20, max_total_bytes=30)
    assert [(m.name, m.data) for m in members] == [("a.jpg", b"a" * 10), ("b/c.png", b"c" * 20)]
    assert errors == []
    _, errors = read_zip(data, max_members=2, max_member_bytes=19, max_total_bytes=30)
    assert errors == ["b/c.png: over the limit of 19 bytes once decompressed"]
    with pytest.raises(BadArchive, match="over the limit of 29 bytes"):
        read_zip(data, max_members=2, max_member_bytes=20, max_total_bytes=29)
    with pytest.raises(TooManyMembers) as refused:
        read_zip(data, max_members=1, max_member_bytes=20, max_total_bytes=30)
    assert refused.value.count == 2
    # a directory of many tiny entries is refused from the end record, before it is parsed
    many = _zip({f"{i}.jpg": b"" for i in range(300)})
    with pytest.raises(TooManyMembers) as refused:
        read_zip(many, max_members=10, max_member_bytes=20, max_total_bytes=30)
    assert refused.value.count == 300
    with pytest.raises(BadArchive, match="not a readable zip archive"):
        read_zip(data[:-30], max_members=2, max_member_bytes=20, max_total_bytes=30)


def test_an_accepted_upload_is_shown_as_a_png_made_here() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    upload = check_upload("dir/cell.tif", encode(pixels, "TIFF"), 10**6, 10**6)
    assert upload.filename == "cell.tif" and upload.image_format == "TIFF"
    assert (upload.width, upload.height) == (30, 40)
    assert upload.display_png.startswith(b"\x89PNG") and upload.thumb_png.startswith(b"\x89PNG")


def test_the_request_probes_headers_only_and_the_pipeline_decodes_completely() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    jpeg = encode(pixels, "JPEG")
    probed = probe_upload("a/cell.jpg", jpeg, 10**6, 10**6)
    assert (probed.filename, probed.image_format, probed.width, probed.height) == ("cell.jpg", "JPEG", 48, 64)
    assert probed.image == jpeg and probed.display_png == b"" and probed.thumb_png == b""
    truncated = jpeg[: len(jpeg) // 3]
    assert probe_upload("cut.jpg", truncated, 10**6, 10**6).width == 48  # its header is sound
    with pytest.raises(RejectedUpload, match=r"cut\.jpg: not a readable image"):
        check_upload("cut.jpg", truncated, 10**6, 10**6)
    refused = {
        "empty.jpg": (b"", "is empty"),
        "text.jpg": (b"not an image", "not a readable image"),
        "anim.gif": (encode(pixels, "GIF"), "GIF is not accepted"),
        "many.jpg": (jpeg, "48x64 pixels is over the limit"),
    }
    for name, (data, message) in refused.items():
        with pytest.raises(RejectedUpload, match=message):
            probe_upload(name, data, 10**6, 48 * 64 - 1 if name == "many.jpg" else 10**6)


def _zlib_level(png: bytes) -> int:
    """FLEVEL of the first IDAT chunk's zlib header: 0 fastest, 1 fast, 2 default, 3 best."""
    start = png.index(b"IDAT") + 4
    return png[start + 1] >> 6


def test_the_pngs_of_an_upload_are_compressed_at_the_fastest_level() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    upload = check_upload("cell.jpg", encode(pixels, "JPEG"), 10**7, 10**7)
    assert _zlib_level(upload.display_png) == 0 and _zlib_level(upload.thumb_png) == 0
    with Image.open(io.BytesIO(upload.display_png)) as shown:
        assert shown.size == (300, 300)


def test_a_failed_classification_is_stored_as_a_failure_with_its_reason() -> None:
    response = analysis_pb2.AnalyzeResponse(
        content_hash="ab",
        parts=[analysis_pb2.PartStatus(part="classification", code=14, reason="SERVICE_UNAVAILABLE")],
    )
    values = report_values(response)
    assert values["status"] == "failed" and "classification: SERVICE_UNAVAILABLE" in values["error"]
    assert json.loads(values["report"])["parts"][0]["code"] == 14


def test_a_restarted_console_fails_what_was_left_pending(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = ResultStore(make_engine(url))
    upload = check_upload("a.png", encode(np.zeros((8, 8, 3), np.uint8)), 10**6, 10**6)
    _, ids = store.create_batch("ann", [upload, upload])
    store.record_result(ids[0], {"status": "done", "label": "monocyte"})
    store.engine.dispose()
    app = create_app(ConsoleSettings(database_url=url, users_file=tmp_path / "none.jsonl"))
    rows = {r["id"]: r for r in app.state.console.store.batch_analyses(1)}
    assert rows[ids[0]]["status"] == "done"
    assert rows[ids[1]]["status"] == "failed" and "interrupted" in rows[ids[1]]["error"]
    app.state.console.store.engine.dispose()
    assert os.path.exists(tmp_path / "c.db")


def test_batches_of_one_key_wait_for_a_free_slot_others_do_not() -> None:
    async def scenario() -> list[str]:
        runner = BatchRunner(per_key=1)
        events: list[str] = []
        release = asyncio.Event()

        async def batch(name: str, hold: bool) -> None:
            events.append(f"{name} start")
            if hold:
                await release.wait()
            events.append(f"{name} end")

        runner.start(batch("a1", hold=True), key="hsk_a")
        runner.start(batch("a2", hold=False), key="hsk_a")
        runner.start(batch("b1", hold=False), key="hsk_b")
        for _ in range(20):
            await asyncio.sleep(0)
        seen = list(events)
        release.set()
        for _ in range(20):
            await asyncio.sleep(0)
        await runner.stop()
        return [*seen, "|", *events[len(seen) :]]

    events = asyncio.run(scenario())
    before = events[: events.index("|")]
    assert "a1 start" in before and "b1 end" in before  # another key is not held up
    assert "a2 start" not in before  # the same key's next batch waited
    assert events[events.index("|") + 1 :] == ["a1 end", "a2 start", "a2 end"]  # then it ran


def test_stopping_cancels_running_and_waiting_batches() -> None:
    async def scenario() -> None:
        runner = BatchRunner(per_key=1)
        started: list[str] = []

        async def batch(name: str) -> None:
            started.append(name)
            await asyncio.Event().wait()

        runner.start(batch("first"), key="k")
        runner.start(batch("second"), key="k")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await runner.stop()
        assert started == ["first"]

    asyncio.run(scenario())


def test_a_referred_white_cell_is_marked_as_such_and_a_decided_one_is_not(tmp_path: Path) -> None:
    templates = make_templates(str(Path(console_package.__file__).parent / "templates"))
    item = {"id": 7, "filename": "smear.jpg"}
    report = {"refer_reasons": ["the models disagree"], "probabilities": {"monocyte": 0.5, "basophil": 0.5}}
    base = {"label": "monocyte", "confidence": 0.5, "malignant": False, "malignant_probability": 0.1}
    shown = {}
    for refer in (True, False):
        result = base | {"refer": refer, "report": report if refer else {"probabilities": {"monocyte": 0.9}}}
        context = {"item": item, "index": 2, "ordinal": 3, "result": result, "problem": ""}
        shown[refer] = templates.get_template("_cell_result.html").render(context)
    assert 'data-testid="cell-refer"' in shown[True] and "the models disagree" in shown[True]
    assert 'class="cell-result referred"' in shown[True] and 'role="alert"' in shown[True]
    assert 'data-testid="cell-refer"' not in shown[False] and "referred" not in shown[False]
    assert "White cell 3 of the smear" in shown[False] and 'src="/analyses/7/cells/2.png"' in shown[False]


def test_a_white_cell_is_named_by_its_stored_box_index_and_cut_with_a_margin() -> None:
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[40:60, 100:140] = 255
    report = {
        "detection": {
            "boxes": [
                {"x1": 0, "y1": 0, "x2": 10, "y2": 10, "class_name": "RBC", "score": 0.9},
                {"x1": 100, "y1": 40, "x2": 140, "y2": 60, "class_name": "WBC", "score": 0.8},
                {"x1": 190, "y1": 90, "x2": 260, "y2": 130, "class_name": "WBC", "score": 0.7},
            ]
        }
    }
    box = white_cell_box(report, 1)
    with Image.open(io.BytesIO(crop_box(encode(pixels, "PNG"), box))) as cut:
        assert cut.size == (52, 52)  # square: the longer side and 15% of it on each side
        assert cut.getpixel((26, 26)) == (255, 255, 255) and cut.getpixel((0, 0)) == (0, 0, 0)  # centred
    with Image.open(io.BytesIO(crop_box(encode(pixels, "PNG"), white_cell_box(report, 2)))) as cut:
        assert cut.size == (91, 91)  # moved inside the image
    with Image.open(io.BytesIO(crop_box(encode(pixels, "PNG"), box | {"x1": 0, "x2": 190}))) as cut:
        assert cut.size == (100, 100)  # shrunk to the image's shorter side
    assert (white_ordinal(report, 1), white_ordinal(report, 2)) == (1, 2)
    for index, message in ((0, "not a white cell"), (3, "no detected cell 3"), (-1, "no detected cell")):
        with pytest.raises(NoSuchCell, match=message):
            white_cell_box(report, index)
    with pytest.raises(NoSuchCell):
        white_cell_box({}, 0)
    outside = {"x1": 300, "y1": 300, "x2": 310, "y2": 310, "class_name": "WBC", "score": 0.5}
    with pytest.raises(ValueError, match="outside"):
        crop_box(encode(pixels, "PNG"), outside)


def test_boxes_are_drawn_into_the_stored_overlay_of_a_smear_only() -> None:
    smear = analysis_pb2.AnalyzeOptions(detect=True, skip_classification=True)
    cell = analysis_pb2.AnalyzeOptions(detect=True, explain=True)
    assert store_boxes_picture(smear) and not store_boxes_picture(cell)  # a cell keeps its Grad-CAM overlay


def test_an_explain_choice_is_checked_against_what_the_gateway_offers() -> None:
    caps = analysis_pb2.GetCapabilitiesResponse(
        classes=["basophil", "myeloblast"],
        models=[
            analysis_pb2.ClassifierModel(name="svm", explain_methods=["ablationcam"]),
            analysis_pb2.ClassifierModel(name="lr", explain_methods=["gradcam", "gradcam++", "ablationcam"]),
        ],
    )
    choices = ExplainChoices.from_capabilities(caps)
    assert choices.methods == ("ablationcam", "gradcam", "gradcam++")
    assert choices.supporting("gradcam") == ("lr",) and choices.supporting("ablationcam") == ("svm", "lr")
    assert choices.check() == ExplainChoice()
    assert choices.check("lr", "basophil", "gradcam++") == ExplainChoice("lr", "basophil", "gradcam++")
    assert choices.check("", "", "gradcam") == ExplainChoice(method="gradcam")  # the gateway's default model
    for wanted, message in (
        (("resnet", "", ""), "one of the models svm, lr"),
        (("", "platelet", ""), "one of the classes basophil, myeloblast"),
        (("svm", "", "gradcam"), "The methods svm accepts are ablationcam"),
        (("", "", "scorecam"), "The methods the models accept are ablationcam, gradcam, gradcam\\+\\+"),
    ):
        with pytest.raises(BadChoice, match=message) as refused:
            choices.check(*wanted)
        assert refused.value.status == 400
    away = ExplainChoices(problem="the gateway did not list its models (UNAVAILABLE)")
    assert away.check() == ExplainChoice()
    with pytest.raises(BadChoice, match="cannot be chosen now") as refused:
        away.check("lr")
    assert refused.value.status == 503
    options = ExplainChoice("lr", "basophil", "gradcam").apply(analysis_pb2.AnalyzeOptions(explain=True))
    assert (options.explain_model, options.explain_class, options.explain_method) == (
        "lr",
        "basophil",
        "gradcam",
    )


def test_the_explain_choices_are_asked_for_once_a_minute_per_key() -> None:
    now = [0.0]
    cache = CapabilitiesCache(ttl_s=60, failed_ttl_s=10, clock=lambda: now[0])
    asked: list[str] = []

    def fetcher(answer: ExplainChoices) -> Any:
        async def fetch() -> ExplainChoices:
            asked.append(answer.problem or "ok")
            return answer

        return fetch

    ok, down = ExplainChoices((("lr", ("gradcam",)),), ("a",)), ExplainChoices(problem="down")

    async def run() -> None:
        assert await cache.get("k1", fetcher(ok)) is ok
        assert await cache.get("k1", fetcher(down)) is ok  # cached
        assert await cache.get("k2", fetcher(down)) is down  # another key
        now[0] = 11.0
        assert await cache.get("k2", fetcher(ok)) is ok  # a failure is kept 10 s only
        now[0] = 61.0
        assert await cache.get("k1", fetcher(down)) is down

    asyncio.run(run())
    assert asked == ["ok", "down", "ok", "down"]
