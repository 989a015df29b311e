-- Each user whose manager is a touched user (or carries no userPrincipalName yet): the manager
-- as a full listing's $expand would show it now, null when that user is gone.
CREATE OR REPLACE TEMP TABLE manager_fix AS
SELECT
    u.id,
    CASE
        WHEN m.id IS NOT NULL
            THEN json_object(
                '@odata.type', {{ user_type }}, 'id', m.id, 'userPrincipalName', m.userprincipalname
            )
    END AS manager
FROM raw.users AS u
LEFT JOIN raw.users AS m ON (u.manager ->> 'id') = m.id
WHERE
    u.manager IS NOT NULL
    AND (
        (u.manager ->> 'id') IN (SELECT t.id FROM touched_users AS t)
        OR (u.manager ->> 'userPrincipalName') IS NULL
    )
