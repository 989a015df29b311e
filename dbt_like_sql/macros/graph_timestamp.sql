-- A Graph timestamp string as TIMESTAMPTZ. Graph writes "" and 0001-01-01T00:00:00Z for "never":
-- both become NULL. A malformed timestamp fails the run rather than silently turning into "never"
-- (which would make the object look stale).
CREATE OR REPLACE TEMP MACRO graph_timestamp(graph_value) AS
nullif(
    CAST(nullif(graph_value, '') AS TIMESTAMPTZ),
    TIMESTAMPTZ '0001-01-01 00:00:00+00'
);
