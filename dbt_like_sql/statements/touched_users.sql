-- The users whose userPrincipalName changed this run, or who were added or removed: raw.users
-- against its state before the run (upns_before). What a manager's or owner's UPN is refreshed
-- for (connector/incremental.py).
CREATE OR REPLACE TEMP TABLE touched_users AS
SELECT coalesce(n.id, b.id) AS id
FROM raw.users AS n
FULL OUTER JOIN upns_before AS b ON n.id = b.id
WHERE n.userprincipalname IS DISTINCT FROM b.userprincipalname
