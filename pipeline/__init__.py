"""Spark side of polycorpus: session, readers, stage runner, stages, stats and report.

Every stage reads the previous stage's parquet, maps pure functions from :mod:`filters`
over Arrow batches and publishes its output atomically (see :mod:`pipeline.stage`).
"""
