"""The DICOM engine: DICOM instances -> rows and schema of the Cloud Healthcare BigQuery table."""
