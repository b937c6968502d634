"""Reusable assertions for tests (row-vs-schema checks and the like)."""
