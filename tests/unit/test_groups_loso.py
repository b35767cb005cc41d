"""Groups merge patients and duplicates; splits keep every (class, site) mix; leave-one-source-out folds
test on one whole site and fit and calibrate on the others, never splitting a group."""

from __future__ import annotations

import numpy as np

from hemascope.training.groups import merge_groups, strata
from hemascope.training.loso import loso_folds
from hemascope.training.split import grouped_split


def test_patients_and_duplicates_merge_transitively() -> None:
    patients = ["p1", "p1", "", "p2", "", ""]
    duplicates = np.array([0, 1, 1, 2, 3, 3])  # image 2 copies image 1; images 4 and 5 are copies
    groups = merge_groups(patients, duplicates)
    assert groups[0] == groups[1] == groups[2]  # same patient, then a copy of the patient's image
    assert groups[3] != groups[0]
    assert groups[4] == groups[5] and groups[4] not in (groups[0], groups[3])


def test_strata_are_class_and_site_pairs() -> None:
    s = strata(np.array([0, 0, 1, 0]), ["a", "b", "a", "a"])
    assert s[0] == s[3] and len(set(s.tolist())) == 3


def _synthetic() -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    sites, y, patients = [], [], []
    for site, classes in (("a", [0, 1, 2]), ("b", [3, 4]), ("c", [0, 1, 2, 3, 4])):
        for patient in range(12):
            for _ in range(6):
                sites.append(site)
                y.append(int(rng.choice(classes)))
                patients.append(f"{site}{patient}")
    groups = merge_groups(patients, np.arange(len(y)))
    training = np.ones(len(y), dtype=bool)
    training[-10:] = False  # an evaluation-only tail of site c
    return np.array(y, dtype=np.int64), sites, groups, training


def test_grouped_split_stratified_by_site_never_splits_a_patient() -> None:
    y, sites, groups, _ = _synthetic()
    split = grouped_split(strata(y, sites), groups, seed=50)
    test_groups = set(groups[split.test].tolist())
    assert not test_groups & set(groups[split.train].tolist())
    assert not set(groups[split.fit].tolist()) & set(groups[split.calib].tolist())
    for site in "abc":
        share = np.mean([sites[i] == site for i in split.test])
        assert 0.2 < share < 0.5  # every site is in the test part


def test_loso_folds_hold_one_site_out_whole() -> None:
    y, sites, groups, training = _synthetic()
    folds = loso_folds(y, sites, groups, training, seed=50)
    site_array = np.array(sites)
    assert [f.held_out for f in folds] == ["a", "b", "c"]
    for fold in folds:
        assert set(site_array[fold.test]) == {fold.held_out}
        assert len(fold.test) == int((site_array == fold.held_out).sum())  # evaluation-only rows too
        used = np.concatenate([fold.fit, fold.calib])
        assert fold.held_out not in set(site_array[used]) and training[used].all()
        assert len(used) == int((training & (site_array != fold.held_out)).sum())
        assert not set(groups[fold.fit].tolist()) & set(groups[fold.calib].tolist())
