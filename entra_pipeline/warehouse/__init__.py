"""The warehouse layer: DuckDB files, the atomic publication, the SQL model runner, loading and
table metadata; shared by every source and knowing nothing of Graph."""
