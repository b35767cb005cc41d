"""Dataset specs: sites by prefix or per dataset, patients from a manifest, roles, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hemascope.training.sources import (
    SourceSpecError,
    load_spec,
    parse_spec,
    scan_sources,
    spec_from_option,
)


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def two_datasets(tmp_path: Path) -> Path:
    _touch(
        tmp_path / "mixed",
        "train/basophil/BA_1.jpg",
        "train/myeloblast/MYO_1.jpg",
        "val/myeloblast/MYO_2.jpg",
    )
    _touch(tmp_path / "lab", "basophil/P01_BA_1.jpg", "myeloblast/P01_BL_1.jpg", "myeloblast/P02_BL_2.jpg")
    (tmp_path / "lab" / "manifest.csv").write_text(
        "file,class,patient\n"
        "basophil/P01_BA_1.jpg,basophil,Patient_01\n"
        "myeloblast/P01_BL_1.jpg,myeloblast,Patient_01\n"
        "myeloblast/P02_BL_2.jpg,myeloblast,Patient_02\n"
    )
    (tmp_path / "spec.yaml").write_text(
        "data_dir: .\n"
        "datasets:\n"
        "  - {name: mixed, root: mixed, sites: {BA_: here, MYO_: there}}\n"
        "  - {name: lab, root: lab, groups: patient, site: elsewhere}\n"
        "  - {name: extra, root: lab, site: elsewhere, role: evaluation}\n"
    )
    return tmp_path


def test_spec_gives_sites_patients_and_roles(two_datasets: Path) -> None:
    scan = scan_sources(load_spec(two_datasets / "spec.yaml"))
    by_name = {(r.dataset, r.path.name): r for r in scan.records}
    assert by_name["mixed", "BA_1.jpg"].site == "here"
    assert by_name["mixed", "MYO_2.jpg"].site == "there" and by_name["mixed", "MYO_2.jpg"].split == "val"
    assert by_name["mixed", "MYO_1.jpg"].patient == ""
    assert by_name["lab", "P01_BL_1.jpg"].patient == "lab/Patient_01"
    assert by_name["extra", "P01_BL_1.jpg"].role == "evaluation"
    assert scan.sites == ["here", "there", "elsewhere"]
    assert scan.training_sites() == ["here", "there", "elsewhere"]
    assert scan.counts()["lab:elsewhere"] == {"basophil": 1, "myeloblast": 2}
    described = {d["name"]: d for d in scan.describe()}
    assert described["lab"]["patients"] == 2 and described["mixed"]["patients"] == 0


def test_a_file_matching_no_site_prefix_is_an_error(two_datasets: Path) -> None:
    _touch(two_datasets / "mixed", "train/monocyte/MO_9.jpg")
    with pytest.raises(SourceSpecError, match=r"MO_9\.jpg.*matches none"):
        scan_sources(load_spec(two_datasets / "spec.yaml"))


def test_patient_grouping_needs_every_file_in_the_manifest(two_datasets: Path) -> None:
    _touch(two_datasets / "lab", "basophil/P03_BA_2.jpg")
    with pytest.raises(SourceSpecError, match=r"P03_BA_2\.jpg.*not in its manifest"):
        scan_sources(load_spec(two_datasets / "spec.yaml"))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"datasets": "x"}, "'datasets' list"),
        ({"datasets": [{"name": "a", "root": "r"}]}, "exactly one of 'site' or 'sites'"),
        ({"datasets": [{"name": "a", "root": "r", "site": "s", "groups": "slide"}]}, "'patient' or"),
        ({"datasets": [{"name": "a", "root": "r", "site": "s", "colour": 1}]}, "unknown keys"),
        ({"datasets": [{"name": "a", "root": "r", "site": "s", "role": "evaluation"}]}, "role 'train'"),
        (
            {"datasets": [{"name": "a", "root": "r", "site": "s"}, {"name": "a", "root": "q", "site": "t"}]},
            "unique",
        ),
    ],
)
def test_malformed_specs_are_refused_with_a_reason(document: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(SourceSpecError, match=message):
        parse_spec(document, tmp_path)


def test_unreadable_or_invalid_spec_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(SourceSpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("datasets: [\n")
    with pytest.raises(SourceSpecError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")


def test_data_options_name_a_site_and_find_patients(two_datasets: Path) -> None:
    lab = spec_from_option(f"jhu={two_datasets / 'lab'}")
    assert (lab.name, lab.site, lab.groups, lab.role) == ("jhu", "jhu", "patient", "train")
    plain = spec_from_option(str(two_datasets / "mixed"), role="evaluation")
    assert (plain.name, plain.groups, plain.role) == ("mixed", "duplicates", "evaluation")
    with pytest.raises(SourceSpecError, match="folder not found"):
        scan_sources([spec_from_option(f"x={two_datasets / 'nowhere'}")])


def test_the_committed_three_laboratory_spec_matches_the_shared_data(data_dir: Path) -> None:
    spec = Path(__file__).resolve().parents[2] / "configs" / "data" / "three-labs.yaml"
    scan = scan_sources(load_spec(spec, data_dir))
    assert scan.training_sites() == ["barcelona", "munich", "johns-hopkins"]
    counts = scan.counts()
    assert counts["bloodcells-5class:barcelona"] == {"basophil": 800, "erythroblast": 800, "monocyte": 800}
    assert counts["bloodcells-5class:munich"] == {"myeloblast": 800, "seg_neutrophil": 800}
    assert sum(counts["jhu-cellavision:johns-hopkins"].values()) == 1178
    assert counts["probe-pbc-neutrophil:barcelona"] == {"seg_neutrophil": 200}
    assert len({r.patient for r in scan.records if r.patient}) == 73
