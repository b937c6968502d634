"""Airflow discovers the provider through its `apache_airflow_provider` entry point."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_dicom import __version__
from airflow_provider_dicom.get_provider_info import get_provider_info

PACKAGE = "airflow-provider-dicom"


def test_entry_point_is_registered():
    found = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_dicom")]
    assert len(found) == 1
    assert found[0].load()()["package-name"] == PACKAGE


def test_provider_info_is_valid_against_airflow_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_listed_module_imports():
    info = get_provider_info()
    modules = [m for section in ("operators", "hooks", "sensors", "triggers") for entry in info.get(section, [])
               for m in entry["python-modules"]]
    assert "airflow_provider_dicom.operators.export" in modules
    for module in modules:
        importlib.import_module(module)
    for class_path in info.get("extra-links", []):
        module, _, name = class_path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), class_path


def test_providers_manager_lists_the_provider():
    from airflow.providers_manager import ProvidersManager

    provider = ProvidersManager().providers[PACKAGE]
    assert provider.version == __version__
    assert provider.data["name"] == "DICOM"


def test_airflow_providers_list_shows_it(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow_cli = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow_cli), "providers", "list", "-o", "json"],
        check=False, capture_output=True, text=True, env=env, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    listed = {row["package_name"]: row for row in json.loads(result.stdout[result.stdout.index("[") :])}
    assert listed[PACKAGE]["version"] == __version__


def _project_urls() -> dict[str, str]:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    return pyproject["project"]["urls"]


def test_provider_info_names_the_documentation_url_of_the_project_urls():
    """Airflow versions that show only get_provider_info() (no Project-URL reading) get the URL too."""
    urls = _project_urls()
    assert urls["Documentation"].startswith("https://")
    assert get_provider_info()["documentation-url"] == urls["Documentation"]
    assert {"Source", "Issue tracker"} <= set(urls)


def test_providers_manager_shows_the_documentation_url():
    """What `airflow providers get airflow-provider-dicom --full` prints as `documentation-url`: on
    Airflow 3.3 read from the installed metadata's Project-URL "Documentation", so it needs the
    package installed from this pyproject.toml (scripts/bootstrap.sh reinstalls when it changes)."""
    from airflow.providers_manager import ProvidersManager

    provider = ProvidersManager().providers[PACKAGE]
    assert provider.data["documentation-url"] == _project_urls()["Documentation"]
