-- Disabled members: revoke their sign-in sessions, so that refresh tokens issued before the
-- account was disabled stop working (guests are left to their home tenant).
-- action: user.revoke_sessions
SELECT
    u.id AS object_id,
    u.userPrincipalName AS object_name,
    'account disabled' AS reason,
    u.accountEnabled
FROM staging.users AS u
WHERE NOT u.accountEnabled AND NOT u.is_guest
ORDER BY u.userPrincipalName, u.id
