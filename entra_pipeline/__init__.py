"""entra-pipeline: Microsoft Entra ID -> DuckDB, orchestrated by Dagster.

An open replacement for the Ivanti Neurons Entra ID connector and the Neurons for MDM user source.
"""

__version__ = "0.1.0"
