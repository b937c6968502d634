"""Benchmarks: a generated DICOM corpus (`benchmarks.corpus`) and the engine benchmark
(`benchmarks.bench_engine`). Run them as modules from the repository root, e.g.
`python -m benchmarks.bench_engine --count 10000`."""
