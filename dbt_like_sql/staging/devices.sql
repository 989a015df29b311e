-- Devices flattened from Graph: typed timestamps, the join type (label and option value) from
-- trustType, the first registered owner, and the activity the stale threshold reads.
--
-- Graph properties keep their Graph names; derived columns are snake_case. Graph writes "" and
-- 0001-01-01T00:00:00Z for "never": both become NULL here, and a malformed timestamp fails the run
-- rather than silently turning into "never" (which would make the device look stale).
WITH devices AS (
    SELECT
        d.tenant_id,
        d.id,
        d.deviceId,
        d.displayName,
        d.operatingSystem,
        d.operatingSystemVersion,
        d.trustType,
        -- Labels as the Entra admin centre shows them; any other trustType has no join type.
        CASE d.trustType
            WHEN 'Workplace' THEN 'Microsoft Entra registered'
            WHEN 'AzureAd' THEN 'Microsoft Entra joined'
            WHEN 'ServerAd' THEN 'Hybrid Microsoft Entra joined'
        END AS join_type_label,
        -- The value the devices.join_types option lists.
        CASE d.trustType
            WHEN 'Workplace' THEN 'entra_registered'
            WHEN 'AzureAd' THEN 'entra_joined'
            WHEN 'ServerAd' THEN 'hybrid_entra_joined'
        END AS join_type,
        d.accountEnabled,
        d.isCompliant,
        d.isManaged,
        d.manufacturer,
        d.model,
        nullif(CAST(nullif(d.approximateLastSignInDateTime, '') AS TIMESTAMPTZ),
            TIMESTAMPTZ '0001-01-01 00:00:00+00') AS approximateLastSignInDateTime,
        nullif(CAST(nullif(d.registrationDateTime, '') AS TIMESTAMPTZ),
            TIMESTAMPTZ '0001-01-01 00:00:00+00') AS registrationDateTime,
        nullif(CAST(nullif(d.onPremisesLastSyncDateTime, '') AS TIMESTAMPTZ),
            TIMESTAMPTZ '0001-01-01 00:00:00+00') AS onPremisesLastSyncDateTime,
        d.registeredOwners -> 0 ->> 'id' AS owner_id,
        d.registeredOwners -> 0 ->> 'userPrincipalName' AS owner_upn,
        coalesce(json_array_length(d.registeredOwners), 0) AS owner_count
    FROM {{ ref('raw.devices') }} AS d
)

SELECT
    *,
    -- SPEC 3: what the device stale threshold compares; greatest() ignores NULLs.
    greatest(approximateLastSignInDateTime, registrationDateTime, onPremisesLastSyncDateTime)
        AS last_activity_at
FROM devices
