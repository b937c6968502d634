"""Finding the stand-ins: a missing installation is a clear error naming the folder and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicom_standins import STANDINS_ENV, StandinError, standins_root, start_bigquery


def test_env_var_names_the_standins_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(STANDINS_ENV, str(tmp_path))
    assert standins_root() == tmp_path


def test_missing_folder_is_an_error_naming_it_and_the_install_script(tmp_path, monkeypatch):
    monkeypatch.setenv(STANDINS_ENV, str(tmp_path / "absent"))
    with pytest.raises(StandinError, match=r"absent.*scripts/install-standins\.sh"):
        standins_root()


def test_missing_local_bigquery_is_an_error_before_any_process_starts(tmp_path):
    with pytest.raises(StandinError, match=r"local-bigquery not found: run scripts/install-standins\.sh"):
        start_bigquery(root=tmp_path)


def test_default_root_is_the_checkouts_standins(monkeypatch):
    """Whether or not scripts/install-standins.sh has run in this checkout yet (the fast tier may
    run first): the default is the checkout's own .standins, found or named in the error."""
    import dicom_standins.standins as standins

    monkeypatch.delenv(STANDINS_ENV, raising=False)
    expected = Path(standins.__file__).resolve().parents[1] / ".standins"
    if expected.is_dir():
        assert standins_root() == expected
    else:
        with pytest.raises(StandinError, match=re.escape(str(expected))):
            standins_root()
