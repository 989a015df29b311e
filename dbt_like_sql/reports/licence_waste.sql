-- Licensed users who cannot be using their licences (docs/tables.md, "Reports"): accounts that
-- are disabled, and enabled accounts with no successful sign-in for more than
-- $licence_idle_days days (an account that never signed in counts from its creation). The idle
-- half needs this run's sign-in activity: without it, disabled accounts alone.
--
-- group: reports
SELECT
    u.tenant_id,
    u.id,
    u.userPrincipalName,
    u.displayName,
    u.license_names,
    u.license_count,
    u.accountEnabled,
    u.lastSuccessfulSignInDateTime,
    CASE
        WHEN NOT u.accountEnabled THEN 'disabled'
        WHEN u.lastSuccessfulSignInDateTime IS NULL THEN 'never signed in'
        ELSE
            'no successful sign-in for more than '
            || CAST($licence_idle_days AS INTEGER) || ' days'
    END AS reason
FROM {{ ref('staging.users') }} AS u
WHERE
    u.license_names IS NOT NULL
    AND (
        NOT u.accountEnabled
        OR (
            CAST($sign_in_imported AS BOOLEAN)
            AND coalesce(u.lastSuccessfulSignInDateTime, u.createdDateTime)
            < CAST($now AS TIMESTAMPTZ) - to_days(CAST($licence_idle_days AS INTEGER))
        )
    )
