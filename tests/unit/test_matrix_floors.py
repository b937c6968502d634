"""The version matrix tests the floors pyproject.toml declares, not others: every pin in
scripts/matrix/floors.txt (the airflow-3.1.0 env's constraints) is exactly the `>=` floor of the
same dependency, and every direct dependency with a floor is pinned there or by the Composer set."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# Floors proven elsewhere: Airflow's by the airflow-2.11 env (2.11.2), requests' by nothing (Airflow
# 3 itself needs a newer one; see pyproject.toml).
NOT_PINNED = {"apache-airflow", "requests"}


def pins(path: Path) -> dict[str, Version]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:  # unpinned lines: resolved as of the set's date
            name, _, version = line.partition("==")
            found[name.strip().lower()] = Version(version.strip())
    return found


def floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = {}
    for text in project["dependencies"]:
        requirement = Requirement(text)
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if lower:
            found[requirement.name.lower()] = max(lower)
    return found


def test_the_matrix_pins_every_declared_floor():
    declared = floors()
    pinned = pins(ROOT / "scripts" / "matrix" / "floors.txt")
    composer = pins(ROOT / "scripts" / "matrix" / "composer-airflow-3.1.0.txt")
    for name, version in pinned.items():
        assert declared.get(name) == version, f"floors.txt pins {name}=={version}; pyproject.toml says >={declared.get(name)}"
    # The Composer image's providers-google is the declared floor itself.
    assert composer["apache-airflow-providers-google"] == declared["apache-airflow-providers-google"]
    unproven = set(declared) - set(pinned) - {"apache-airflow-providers-google"} - NOT_PINNED
    assert not unproven, f"floors no matrix env installs: {sorted(unproven)}"


def test_composer_image_needs_the_compat_upgrade():
    """The point of the airflow-3.1.0 env: the image's common-compat is below our floor."""
    composer = pins(ROOT / "scripts" / "matrix" / "composer-airflow-3.1.0.txt")
    name = "apache-airflow-providers-common-compat"
    assert composer[name] < floors()[name]
