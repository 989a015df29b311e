-- Devices flattened from Graph: typed timestamps, the join type (label and option value) from
-- trustType, the first registered owner, and the activity the stale threshold reads.
--
-- Graph properties keep their Graph names; derived columns are snake_case. Timestamps go through
-- graph_timestamp() ("" and 0001-01-01T00:00:00Z are NULL). The join type vocabulary arrives as
-- $join_type_vocabulary (trust_type, option, label), from entra_pipeline/vocabulary.py.
WITH join_types AS (
    SELECT
        unnest(
            CAST(
                $join_type_vocabulary AS STRUCT(trust_type VARCHAR, option VARCHAR, label VARCHAR)[]
            ),
            recursive := TRUE
        )
),

devices AS (
    SELECT
        d.tenant_id,
        d.id,
        d.deviceId,
        d.displayName,
        d.operatingSystem,
        d.operatingSystemVersion,
        d.trustType,
        -- The label as the Entra admin centre shows it; any other trustType has no join type.
        j.label AS join_type_label,
        -- The value the devices.join_types option lists.
        j.option AS join_type,
        d.accountEnabled,
        d.isCompliant,
        d.isManaged,
        d.manufacturer,
        d.model,
        graph_timestamp(d.approximateLastSignInDateTime) AS approximateLastSignInDateTime,
        graph_timestamp(d.registrationDateTime) AS registrationDateTime,
        graph_timestamp(d.onPremisesLastSyncDateTime) AS onPremisesLastSyncDateTime,
        d.registeredOwners -> 0 ->> 'id' AS owner_id,
        d.registeredOwners -> 0 ->> 'userPrincipalName' AS owner_upn,
        coalesce(json_array_length(d.registeredOwners), 0) AS owner_count
    FROM {{ source('raw.devices') }} AS d
    LEFT JOIN join_types AS j ON d.trustType = j.trust_type
)

SELECT
    *,
    -- What the device stale threshold compares (docs/options-and-mapping.md); greatest()
    -- ignores NULLs.
    greatest(approximateLastSignInDateTime, registrationDateTime, onPremisesLastSyncDateTime)
        AS last_activity_at
FROM devices
