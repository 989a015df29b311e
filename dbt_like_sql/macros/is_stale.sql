-- The connector's stale threshold (docs/options-and-mapping.md), written once: an object is stale
-- when its latest activity (last_activity_at) is older than `stale_days` days before `now_at`, or
-- when it has no activity at all. NULL when no threshold is set (`stale_days` NULL). The filtered
-- models keep what is not stale; history.changes records the flag.
CREATE OR REPLACE TEMP MACRO is_stale(last_activity_at, stale_days, now_at) AS (
    CASE
        WHEN stale_days IS NOT NULL
            THEN NOT coalesce(last_activity_at >= now_at - INTERVAL (stale_days) DAY, FALSE)
    END
);
