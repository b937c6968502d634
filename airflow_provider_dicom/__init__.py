"""Export DICOM metadata to BigQuery the way the Cloud Healthcare API does.

Importing this package is cheap on purpose: DAG files import the operators at parse time, so
pydicom and the Google clients are only imported when a task actually runs.
"""

__version__ = "0.1.0"
