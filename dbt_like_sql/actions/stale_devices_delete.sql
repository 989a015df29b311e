-- Disabled devices with no activity for more than stale_days + grace_days days: delete them,
-- the second step of Microsoft's guidance for stale devices (disabled first, by
-- stale_devices_disable, then deleted once the grace period has passed without complaint).
-- Deleting cannot be undone here.
-- action: device.delete
-- param stale_days: 90
-- param grace_days: 30
SELECT
    d.id AS object_id,
    d.displayName AS object_name,
    'disabled, no activity for '
    || coalesce(date_diff('day', d.last_activity_at, now())::VARCHAR, 'ever')
    || ' days' AS reason,
    d.accountEnabled,
    strftime(
        d.approximateLastSignInDateTime AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'
    ) AS approximateLastSignInDateTime
FROM staging.devices AS d
WHERE
    NOT d.accountEnabled
    AND (
        d.last_activity_at IS NULL
        OR d.last_activity_at
        < now() - to_days(CAST($stale_days AS INTEGER) + CAST($grace_days AS INTEGER))
    )
ORDER BY d.displayName, d.id
