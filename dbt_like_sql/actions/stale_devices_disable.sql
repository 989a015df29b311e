-- Enabled devices with no activity (sign-in, registration or on-premises sync) for more than
-- stale_days days: disable them. Microsoft's guidance for stale devices is to disable first
-- and delete only after a grace period (stale_devices_delete).
-- action: device.disable
-- param stale_days: 90
SELECT
    d.id AS object_id,
    d.displayName AS object_name,
    'no activity for '
    || coalesce(date_diff('day', d.last_activity_at, now())::VARCHAR, 'ever')
    || ' days' AS reason,
    d.accountEnabled,
    strftime(
        d.approximateLastSignInDateTime AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'
    ) AS approximateLastSignInDateTime
FROM staging.devices AS d
WHERE
    d.accountEnabled
    AND (
        d.last_activity_at IS NULL
        OR d.last_activity_at < now() - to_days(CAST($stale_days AS INTEGER))
    )
ORDER BY d.displayName, d.id
