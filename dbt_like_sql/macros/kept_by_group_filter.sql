-- The connector's group filter (docs/options-and-mapping.md): an object is kept when no group
-- filter applies to its kind, or when it is a transitive member (transitiveMembers already lists
-- members of nested groups) of any group in raw.group_filters for that kind. `filter_kind` is
-- raw.group_filters.applies_to ('users' or 'devices'), `member_kind`
-- raw.group_members.member_type ('user' or 'device').
CREATE OR REPLACE TEMP MACRO kept_by_group_filter(object_id, filter_kind, member_kind) AS (
    NOT EXISTS (
        SELECT 1 FROM raw.group_filters AS f
        WHERE f.applies_to = filter_kind
    )
    OR object_id IN (
        SELECT m.member_id
        FROM raw.group_members AS m
        INNER JOIN raw.group_filters AS f ON m.group_id = f.group_id
        WHERE f.applies_to = filter_kind AND m.member_type = member_kind
    )
);
