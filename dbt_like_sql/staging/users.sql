-- Users flattened from Graph: typed timestamps, licence names, manager, first business phone,
-- sign-in activity (null unless it was imported this run) and the activity the stale threshold
-- reads.
--
-- Graph properties keep their Graph names; derived columns are snake_case. Timestamps go through
-- graph_timestamp() ("" and 0001-01-01T00:00:00Z are NULL). $sign_in_imported says whether this
-- run imported sign-in activity.

-- depends_on: {{ source('raw.extraction_status') }} (read for $sign_in_imported)

-- raw.sign_in_activity is read only when this run imported it: a table left from an earlier run
-- must not make users look active.
WITH sign_ins AS (
    SELECT
        id,
        graph_timestamp(signInActivity ->> 'lastSignInDateTime') AS lastSignInDateTime,
        graph_timestamp(signInActivity ->> 'lastNonInteractiveSignInDateTime')
            AS lastNonInteractiveSignInDateTime,
        graph_timestamp(signInActivity ->> 'lastSuccessfulSignInDateTime')
            AS lastSuccessfulSignInDateTime
    FROM {{ source('raw.sign_in_activity') }}
    WHERE CAST($sign_in_imported AS BOOLEAN)
),

-- The tenant's SKUs as one list (a few dozen entries). Each user's licence names are looked up in
-- it within the user's row: no aggregate over all users' licences, which DuckDB could not spill (an
-- ordered string_agg per user ran out of 128 MB at 2M users, where this runs in 64 MB).
skus AS (
    SELECT list({ 'skuId': skuId, 'skuPartNumber': skuPartNumber }) AS known
    FROM {{ source('raw.subscribed_skus') }}
),

users AS (
    SELECT
        u.tenant_id,
        u.id,
        u.userPrincipalName,
        u.displayName,
        u.givenName,
        u.surname,
        u.mail,
        u.jobTitle,
        u.department,
        u.officeLocation,
        u.mobilePhone,
        u.businessPhones[1] AS business_phone,
        u.employeeId,
        u.employeeType,
        u.accountEnabled,
        u.userType,
        coalesce(u.userType = 'Guest', FALSE) AS is_guest,
        graph_timestamp(u.createdDateTime) AS createdDateTime,
        u.onPremisesSyncEnabled,
        graph_timestamp(u.onPremisesLastSyncDateTime) AS onPremisesLastSyncDateTime,
        u.city,
        u.state,
        u.country,
        u.usageLocation,
        u.companyName,
        coalesce(json_array_length(u.assignedLicenses), 0) AS license_count,
        -- A licence whose SKU is not in subscribedSkus (e.g. that call was not permitted) keeps
        -- its skuId, so the user still shows as licensed and the name says what is unknown.
        -- l and k are lambda parameters (a licence, a SKU), not tables.
        -- noqa: disable=RF01
        nullif(
            array_to_string(
                list_sort(
                    list_transform(
                        from_json(u.assignedLicenses, '[{"skuId": "VARCHAR"}]'),
                        LAMBDA l: coalesce(
                            list_filter(skus.known, LAMBDA k: k.skuId = l.skuId)[1].skuPartNumber,
                            l.skuId
                        )
                    )
                ),
                ','
            ),
            ''
        ) AS license_names,
        -- noqa: enable=RF01
        u.manager ->> 'id' AS manager_id,
        u.manager ->> 'userPrincipalName' AS manager_upn,
        s.lastSignInDateTime,
        s.lastNonInteractiveSignInDateTime,
        s.lastSuccessfulSignInDateTime,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute1' AS extensionAttribute1,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute2' AS extensionAttribute2,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute3' AS extensionAttribute3,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute4' AS extensionAttribute4,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute5' AS extensionAttribute5,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute6' AS extensionAttribute6,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute7' AS extensionAttribute7,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute8' AS extensionAttribute8,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute9' AS extensionAttribute9,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute10' AS extensionAttribute10,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute11' AS extensionAttribute11,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute12' AS extensionAttribute12,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute13' AS extensionAttribute13,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute14' AS extensionAttribute14,
        u.onPremisesExtensionAttributes ->> 'extensionAttribute15' AS extensionAttribute15
    FROM {{ source('raw.users') }} AS u
    CROSS JOIN skus
    LEFT JOIN sign_ins AS s ON u.id = s.id
)

SELECT
    *,
    -- The latest sign-in of any kind (User.LastLogon).
    greatest(lastSignInDateTime, lastNonInteractiveSignInDateTime, lastSuccessfulSignInDateTime)
        AS last_sign_in_at,
    -- What the user stale threshold compares (docs/options-and-mapping.md); greatest()
    -- ignores NULLs.
    greatest(
        lastSignInDateTime, lastNonInteractiveSignInDateTime, createdDateTime,
        onPremisesLastSyncDateTime
    ) AS last_activity_at
FROM users
