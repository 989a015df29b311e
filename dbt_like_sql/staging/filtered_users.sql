-- Users the connector imports (SPEC 3): licensed users only, AND the stale threshold, AND the user
-- group filter.
--
-- group: filtered
--
-- The stale threshold ($user_stale_days, NULL = off) applies only when this run imported sign-in
-- activity: without it a user who signs in daily but was created years ago would look stale. A user
-- is kept when last_activity_at >= $now - N days; a user with no activity at all is dropped. The
-- group filter keeps transitive members of any group in raw.group_filters (applies_to 'users');
-- an empty list is no filter.
WITH sign_in_imported AS (
    SELECT count(*) > 0 AS imported
    FROM {{ ref('raw.extraction_status') }}
    WHERE collection = 'sign_in_activity' AND status = 'complete'
),

filter_groups AS (
    SELECT group_id
    FROM {{ ref('raw.group_filters') }}
    WHERE applies_to = 'users'
),

-- transitiveMembers already lists the members of nested groups under the filter group.
group_members AS (
    SELECT DISTINCT m.member_id
    FROM {{ ref('raw.group_members') }} AS m
    JOIN filter_groups AS g ON g.group_id = m.group_id
    WHERE m.member_type = 'user'
)

SELECT u.*
FROM {{ ref('staging.users') }} AS u
WHERE
    u.license_count > 0
    AND (
        CAST($user_stale_days AS INTEGER) IS NULL
        OR NOT (SELECT imported FROM sign_in_imported)
        OR coalesce(
            u.last_activity_at
                >= CAST($now AS TIMESTAMPTZ) - INTERVAL (CAST($user_stale_days AS INTEGER)) DAY,
            false
        )
    )
    AND (
        NOT EXISTS (SELECT 1 FROM filter_groups)
        OR u.id IN (SELECT member_id FROM group_members)
    )
