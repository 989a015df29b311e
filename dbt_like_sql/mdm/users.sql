-- Every user of the tenant (no licence or stale filter), with the Managed Apple ID.
--
-- $managed_apple_id (none | email | upn) says where the Managed Apple ID comes from; with
-- $appleid_subdomain its domain gets the appleid. prefix (jane@contoso.com ->
-- jane@appleid.contoso.com), which keeps it clear of personal Apple IDs.
WITH users AS (
    SELECT
        *,
        CASE CAST($managed_apple_id AS VARCHAR)
            WHEN 'email' THEN nullif(mail, '')
            WHEN 'upn' THEN nullif(userPrincipalName, '')
        END AS apple_id_source
    FROM {{ source('mdm_extract.directory_users') }}
)

SELECT
    tenant_id,
    CAST($connector AS VARCHAR) AS connector,
    id,
    userPrincipalName,
    displayName,
    givenName,
    surname,
    nullif(mail, '') AS mail,
    accountEnabled,
    userType,
    coalesce(userType = 'Guest', FALSE) AS is_guest,
    graph_timestamp(createdDateTime) AS createdDateTime,
    onPremisesSyncEnabled,
    CASE
        WHEN CAST($appleid_subdomain AS BOOLEAN)
            THEN regexp_replace(apple_id_source, '@([^@]*)$', '@appleid.\1')
        ELSE apple_id_source
    END AS managed_apple_id,
    CAST($synced_at AS TIMESTAMPTZ) AS synced_at
FROM users
ORDER BY userPrincipalName, id
