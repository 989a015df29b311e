-- Each user's invitation: the fold of their events after the first `recorded` one, each field
-- the value of the last event that sets it. `recorded` starts an invitation (a second one is
-- ignored); `deferred` sets its note; `sending` its address and attempt, failed with the outcome
-- unknown until `sent` or `failed` follows (the e-mail may or may not have gone out), no note;
-- `sent` and `failed` its status and completion. arg_max_null: the last event's value even
-- when it is null (arg_max skips null values).
CREATE OR REPLACE TEMP VIEW invitation_state AS
WITH first AS (
    SELECT * FROM invitation_events
    WHERE event = 'recorded'
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY seq) = 1
),

later AS (
    SELECT
        e.user_id,
        arg_max_null(e.email, e.seq) FILTER (WHERE e.event = 'sending') AS email,
        arg_max_null(e.at, e.seq) FILTER (WHERE e.event = 'sending') AS attempted_at,
        arg_max_null(CASE e.event WHEN 'sent' THEN 'sent' ELSE 'failed' END, e.seq)
        FILTER (WHERE e.event IN ('sending', 'sent', 'failed')) AS status,
        arg_max_null(
            CASE e.event
                WHEN 'sending' THEN {{ outcome_unknown }}
                WHEN 'failed' THEN e.error
            END,
            e.seq
        ) FILTER (WHERE e.event IN ('sending', 'sent', 'failed')) AS error,
        arg_max_null(e.at, e.seq)
        FILTER (WHERE e.event IN ('sent', 'failed')) AS completed_at,
        count(*) FILTER (WHERE e.event IN ('deferred', 'sending')) AS notes,
        arg_max_null(CASE e.event WHEN 'deferred' THEN e.note END, e.seq)
        FILTER (WHERE e.event IN ('deferred', 'sending')) AS note
    FROM invitation_events AS e
    INNER JOIN first AS f ON e.user_id = f.user_id AND e.seq > f.seq
    GROUP BY e.user_id
)

SELECT
    f.tenant_id,
    f.user_id,
    f.userPrincipalName,
    coalesce(l.email, f.email) AS email,
    coalesce(l.status, 'pending') AS status,
    f.at AS recorded_at,
    f.run_id AS recorded_run_id,
    l.attempted_at,
    l.completed_at,
    l.error,
    CASE WHEN coalesce(l.notes, 0) > 0 THEN l.note ELSE f.note END AS note,
    f.seq AS recorded_seq
FROM first AS f
LEFT JOIN later AS l ON f.user_id = l.user_id
