-- The lines of a batch of the invitation ledger (`text`), numbered from `first` as in the file
-- (blank ones too): what statements/invitation_*.sql read a batch through.
CREATE OR REPLACE TEMP MACRO invitation_lines(text, first) AS TABLE
    SELECT
        first + lines.i - 1 AS seq,
        lines.line
    FROM (
        SELECT
            unnest(split.l) AS line,
            generate_subscripts(split.l, 1) AS i
        FROM (SELECT string_split(rtrim(text, chr(10)), chr(10)) AS l) AS split
    ) AS lines
    WHERE trim(lines.line) <> '';
