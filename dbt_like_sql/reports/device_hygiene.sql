-- Devices that need an admin's look (docs/tables.md, "Reports"), one row per device and reason:
-- stale (no activity for more than $device_hygiene_days days, or none at all), disabled (still
-- in the directory), ownerless (no registered owner), and duplicate (its display name is shared
-- by other devices, and it is not the most recently active of them).
--
-- group: reports
WITH devices AS (
    SELECT
        d.*,
        count(*) OVER (PARTITION BY d.displayName) AS same_name,
        row_number() OVER (
            PARTITION BY d.displayName ORDER BY d.last_activity_at DESC NULLS LAST, d.id ASC
        ) AS recency
    FROM {{ ref('staging.devices') }} AS d
),

reasons AS (
    SELECT
        *,
        'stale' AS reason
    FROM devices
    WHERE
        coalesce(
            is_stale(
                last_activity_at,
                CAST($device_hygiene_days AS INTEGER),
                CAST($now AS TIMESTAMPTZ)
            ),
            TRUE
        )
    UNION ALL
    SELECT
        *,
        'disabled' AS reason
    FROM devices
    WHERE NOT accountEnabled
    UNION ALL
    SELECT
        *,
        'ownerless' AS reason
    FROM devices
    WHERE owner_count = 0
    UNION ALL
    SELECT
        *,
        'duplicate' AS reason
    FROM devices
    WHERE displayName IS NOT NULL AND same_name > 1 AND recency > 1
)

SELECT
    tenant_id,
    id,
    deviceId,
    displayName,
    operatingSystem,
    join_type,
    accountEnabled,
    owner_upn,
    last_activity_at,
    reason
FROM reasons
ORDER BY displayName, id, reason
