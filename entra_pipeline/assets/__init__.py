"""Dagster assets, one module per layer: raw extraction, SQL models, mapping, MDM user source.

Each module exposes its assets to `entra_pipeline.definitions`, which wires them into jobs.
"""
