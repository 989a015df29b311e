-- Devices the connector imports (docs/options-and-mapping.md): the stale threshold AND the join
-- types AND the device group filter.
--
-- group: filtered
--
-- Stale threshold ($device_stale_days, NULL = off): a device is kept when last_activity_at
-- >= $now - N days; a device with no activity at all is dropped. Join types ($join_types, option
-- values): an empty list keeps every device, those without a trustType included; otherwise only the
-- listed types. The group filter keeps transitive members of any group in raw.group_filters
-- (applies_to 'devices'); an empty list is no filter.

-- depends_on: {{ source('raw.group_filters') }}, {{ source('raw.group_members') }}
-- (kept_by_group_filter)
SELECT d.*
FROM {{ ref('staging.devices') }} AS d
WHERE
    NOT coalesce(
        is_stale(
            d.last_activity_at,
            CAST($device_stale_days AS INTEGER),
            CAST($now AS TIMESTAMPTZ)
        ),
        FALSE
    )
    AND (
        len(CAST($join_types AS VARCHAR[])) = 0
        OR coalesce(list_contains(CAST($join_types AS VARCHAR[]), d.join_type), FALSE)
    )
    AND kept_by_group_filter(d.id, 'devices', 'device')
