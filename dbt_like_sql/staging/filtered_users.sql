-- Users the connector imports (docs/options-and-mapping.md): licensed users only, AND the stale
-- threshold, AND the user group filter.
--
-- group: filtered
--
-- The stale threshold ($user_stale_days, NULL = off) applies only when this run imported sign-in
-- activity ($sign_in_imported): without it a user who signs in daily but was created years ago
-- would look stale. A user is kept when last_activity_at >= $now - N days; a user with no activity
-- at all is dropped. The group filter keeps transitive members of any group in raw.group_filters
-- (applies_to 'users'); an empty list is no filter.

-- depends_on: {{ source('raw.extraction_status') }} (read for $sign_in_imported),
-- {{ source('raw.group_filters') }}, {{ source('raw.group_members') }} (kept_by_group_filter)
SELECT u.*
FROM {{ ref('staging.users') }} AS u
WHERE
    u.license_count > 0
    AND (
        NOT CAST($sign_in_imported AS BOOLEAN)
        OR NOT coalesce(
            is_stale(
                u.last_activity_at,
                CAST($user_stale_days AS INTEGER),
                CAST($now AS TIMESTAMPTZ)
            ),
            FALSE
        )
    )
    AND kept_by_group_filter(u.id, 'users', 'user')
