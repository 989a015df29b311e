-- reports.licence_waste per licence (SKU part number): how many of its assignments are wasted,
-- on disabled accounts and on idle ones, most wasted first.
--
-- group: reports
SELECT
    w.tenant_id,
    w.sku,
    count(*) AS users,
    count(*) FILTER (WHERE NOT w.accountEnabled) AS disabled_users,
    count(*) FILTER (WHERE w.accountEnabled) AS idle_users
FROM (
    SELECT
        tenant_id,
        accountEnabled,
        unnest(string_split(license_names, ',')) AS sku
    FROM {{ ref('reports.licence_waste') }}
) AS w
GROUP BY ALL
ORDER BY users DESC, w.sku ASC
