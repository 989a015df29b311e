-- The invitation ledger of one tenant, one row per event line (user_source/journal.py); the
-- fields are those of ledger.py's events, `at` typed.
CREATE OR REPLACE TEMP TABLE invitation_events (
    seq BIGINT,
    "at" TIMESTAMPTZ,
    "event" VARCHAR,
    tenant_id VARCHAR,
    user_id VARCHAR,
    run_id VARCHAR,
    "userPrincipalName" VARCHAR,
    email VARCHAR,
    note VARCHAR,
    error VARCHAR
);
