"""Policy the root applies across both sources: freshness of the published tables, and recording
the runs that died before their warehouse could."""
