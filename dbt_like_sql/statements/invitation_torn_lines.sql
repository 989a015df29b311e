-- The numbers of the lines of a batch of the ledger ($text, numbered from $first) that are not
-- a JSON object: a line torn by a crash mid-write.
SELECT seq
FROM invitation_lines($text, $first)
WHERE NOT is_json_object(line)
ORDER BY seq
