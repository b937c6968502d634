"""A local Cloud Healthcare API emulator, for tests, the demo and docker-compose; no Google project needed.

No public emulator of the Cloud Healthcare API exists, so this one speaks the v1 REST shapes our
hook uses: datasets and DICOM stores, DICOMweb (STOW-RS, QIDO-RS, WADO-RS metadata),
`dicomStores.export` to BigQuery (rows written by this project's export engine) and to Cloud
Storage, and the long-running operations (get, list, cancel) those exports return. Fault
injection (429/503 bursts, slow exports, failed instances) lives under `/emulator/`.

Run it with `python -m dicom_standins.emulator --port 8090` (127.0.0.1 only) and point
clients at it with `HEALTHCARE_EMULATOR_HOST=http://127.0.0.1:8090`; set BIGQUERY_EMULATOR_HOST and
STORAGE_EMULATOR_HOST in *its* environment to export to the BigQuery and GCS stand-ins.
In Python: `HealthcareEmulator(port=0).start()` (see `server.py`) and `EmulatorClient` (`client.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicom_standins.emulator.client import EmulatorClient
    from dicom_standins.emulator.server import HealthcareEmulator

__all__ = ["EmulatorClient", "HealthcareEmulator"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for its docstring or the client) must not start pulling
    # in the server's dependencies.
    if name == "HealthcareEmulator":
        from dicom_standins.emulator.server import HealthcareEmulator

        return HealthcareEmulator
    if name == "EmulatorClient":
        from dicom_standins.emulator.client import EmulatorClient

        return EmulatorClient
    raise AttributeError(name)
