-- Whether a line of text is a JSON object. json_type fails on a line that is not JSON: CASE
-- evaluates it only on the valid ones.
CREATE OR REPLACE TEMP MACRO is_json_object(line) AS (
    CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE FALSE END
);
