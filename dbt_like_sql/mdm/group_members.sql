-- Transitive members of every group (nested groups resolved).
SELECT
    tenant_id,
    CAST($connector AS VARCHAR) AS connector,
    group_id,
    member_id,
    member_type,
    CAST($synced_at AS TIMESTAMPTZ) AS synced_at
FROM {{ source('mdm_extract.group_members') }}
ORDER BY group_id, member_type, member_id
