-- The events of a batch of the ledger ($text, numbered from $first) into invitation_events,
-- parsed by DuckDB. Events written before the ledger carried GUIDs have only the configured
-- text (a domain, or a GUID in any case); they count by the user's object id alone, which no
-- other tenant's user has ($guid: this tenant's).
INSERT INTO invitation_events BY NAME
SELECT
    parsed.seq,
    parsed.e.event,
    parsed.e.tenant_id,
    parsed.e.user_id,
    parsed.e.run_id,
    parsed.e.userPrincipalName,
    parsed.e.email,
    parsed.e.note,
    parsed.e.error,
    CAST(parsed.e."at" AS TIMESTAMPTZ) AS "at"
FROM (
    SELECT
        seq,
        json_transform(
            line,
            '{"event": "VARCHAR", "tenant_id": "VARCHAR", "user_id": "VARCHAR", '
            || '"run_id": "VARCHAR", "at": "VARCHAR", "userPrincipalName": "VARCHAR", '
            || '"email": "VARCHAR", "note": "VARCHAR", "error": "VARCHAR", '
            || '"tenant_guid": "VARCHAR"}'
        ) AS e
    FROM invitation_lines($text, $first)
    WHERE is_json_object(line)
) AS parsed
WHERE coalesce(parsed.e.tenant_guid, $guid) = $guid
