-- The configured custom attributes, one row per user and attribute.
--
-- $custom_attributes lists (name, source): a top-level user property or a directory extension
-- (source property / directory_extension) is read from the user's own property;
-- extensionAttribute1..15 (source onPremisesExtensionAttributes) from that object. Strings are
-- unquoted, other JSON kept as written; null, "", [] and {} count as no value (NULL).
WITH attributes AS (
    SELECT
        unnest(
            CAST($custom_attributes AS STRUCT(name VARCHAR, source VARCHAR)[]),
            recursive := TRUE
        )
),

-- Each user as one JSON object, so that an attribute is looked up by its configured name.
users AS (
    SELECT
        u.tenant_id,
        u.id,
        u.userPrincipalName,
        to_json(u) AS document
    FROM {{ source('mdm_extract.directory_users') }} AS u
),

attribute_values AS (
    SELECT
        u.tenant_id,
        u.id AS user_id,
        u.userPrincipalName,
        a.name AS attribute,
        a.source,
        CASE
            WHEN a.source = 'onPremisesExtensionAttributes'
                THEN u.document -> 'onPremisesExtensionAttributes' -> a.name
            ELSE u.document -> a.name
        END AS graph_value
    FROM users AS u
    CROSS JOIN attributes AS a
)

SELECT
    tenant_id,
    CAST($connector AS VARCHAR) AS connector,
    user_id,
    userPrincipalName,
    attribute,
    source,
    CASE
        WHEN json_type(graph_value) IN ('ARRAY', 'OBJECT')
            THEN nullif(nullif(CAST(graph_value AS VARCHAR), '[]'), '{}')
        ELSE nullif(graph_value ->> '$', '')
    END AS value,
    CAST($synced_at AS TIMESTAMPTZ) AS synced_at
FROM attribute_values
ORDER BY attribute, userPrincipalName, user_id
