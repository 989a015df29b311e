-- Every group of the tenant.
SELECT
    tenant_id,
    CAST($connector AS VARCHAR) AS connector,
    id,
    displayName,
    description,
    mail,
    mailEnabled,
    securityEnabled,
    groupTypes,
    graph_timestamp(createdDateTime) AS createdDateTime,
    CAST($synced_at AS TIMESTAMPTZ) AS synced_at
FROM {{ source('mdm_extract.groups') }}
ORDER BY displayName, id
