"""The gs:// and DICOMweb figures of `benchmarks.engine_ratios` run end to end on a few instances
against the stand-ins (no time is asserted: the figures are ratios for people to read)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_engine_ratios_remote_figures(tmp_path, capsys) -> None:
    import json

    from benchmarks.engine_ratios import main

    out_file = tmp_path / "ratios.json"
    assert main([
        "--only", "gcs,dicomweb", "--gcs-count", "4", "--web-count", "4", "--rounds", "1",
        "--corpus", str(tmp_path / "corpus"), "--json", str(out_file),
    ]) == 0
    figures = {figure["name"]: figure for figure in json.loads(out_file.read_text())}
    assert set(figures) == {"gcs", "dicomweb"}
    # Both CLI routes exported every instance (a failed export raises), per-instance CPU is known.
    assert set(figures["gcs"]["ms_per_instance"]) == {"folder", "gcs"}
    assert figures["dicomweb"]["rates"]["ours"] > 0 and figures["dicomweb"]["rates"]["fetch+pydicom"] > 0
    assert "gcs" in capsys.readouterr().out
