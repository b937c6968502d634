"""Finding Orthanc: a missing package is a clear error naming the install script (the fixture turns
it into a skip, so machines without apt still run everything else)."""

from __future__ import annotations

import pytest

from dicom_standins import StandinError, standins


def test_missing_plugin_names_the_install_script(monkeypatch, tmp_path):
    monkeypatch.setattr(standins, "ORTHANC_PLUGIN_CANDIDATES", (str(tmp_path / "libOrthancDicomWeb.so"),))
    monkeypatch.setattr(standins.shutil, "which", lambda name: "/usr/sbin/Orthanc")
    with pytest.raises(StandinError, match=r"DICOMweb plugin is not installed: run scripts/install-standins\.sh"):
        standins.orthanc_paths()


def test_missing_orthanc_names_the_install_script(monkeypatch, tmp_path):
    monkeypatch.setattr(standins.shutil, "which", lambda name: None)
    monkeypatch.setattr(standins.os, "access", lambda path, mode: False)
    with pytest.raises(StandinError, match=r"Orthanc is not installed: run scripts/install-standins\.sh"):
        standins.start_orthanc()
