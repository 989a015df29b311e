-- The devices one of whose registered owners is a touched user, with their owners. A join on
-- the unnested owner ids: list_has_any against the list of touched users was devices x users
-- (a first round touches every user: hours of CPU at 1M / 2M).
SELECT
    d.id,
    d.registeredowners
FROM raw.devices AS d
WHERE d.id IN (
    SELECT o.id
    FROM (
        SELECT
            devices.id,
            unnest(
                CAST(json_extract_string(devices.registeredowners, '$[*].id') AS VARCHAR[])
            ) AS owner
        FROM raw.devices AS devices
    ) AS o
    INNER JOIN touched_users AS t ON o.owner = t.id
)
