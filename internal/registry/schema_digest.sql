-- A digest of every catalog row a schema's shape (shape.sql) is read from: each row's identity and the
-- transaction that wrote it (xmin), which every change of a row replaces, and the flags PostgreSQL
-- changes in place. Equal digests mean nothing of the shape changed. It reads no definition, so it opens
-- no relation: a fraction of the shape's cost. NULL when the schema holds an object of a kind not listed
-- here: then only a full read can tell.
WITH ns AS (SELECT n.oid, n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid = $1::pg_catalog.regnamespace::pg_catalog.oid),
dep AS (SELECT d.classid, d.objid, d.xmin FROM pg_catalog.pg_depend d, ns
        WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = ns.oid AND d.objsubid = 0
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_default_acl a WHERE d.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass
                          AND a.oid = d.objid AND a.defaclrole <> ns.nspowner)),
rel AS (SELECT c.oid, c.xmin FROM pg_catalog.pg_class c
        JOIN dep ON dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.objid = c.oid),
item (x) AS (
  SELECT 'n' || n.xmin FROM pg_catalog.pg_namespace n, ns WHERE n.oid = ns.oid
  UNION ALL SELECT 'd' || dep.classid || '.' || dep.objid || '.' || dep.xmin FROM dep
  UNION ALL SELECT 'r' || rel.oid || '.' || rel.xmin FROM rel
  UNION ALL SELECT 'a' || a.attrelid || '.' || a.attnum || '.' || a.xmin FROM rel JOIN pg_catalog.pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0
  UNION ALL SELECT 'f' || ad.oid || '.' || ad.xmin FROM rel JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = rel.oid
  UNION ALL SELECT 'i' || i.indexrelid || '.' || i.xmin || '.' || i.indisvalid || i.indisready || i.indislive || '.' || ic.xmin
    FROM rel JOIN pg_catalog.pg_index i ON i.indrelid = rel.oid JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  UNION ALL SELECT 'c' || co.oid || '.' || co.xmin FROM rel JOIN pg_catalog.pg_constraint co ON co.conrelid = rel.oid
  UNION ALL SELECT 't' || tg.oid || '.' || tg.xmin FROM rel JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = rel.oid
  UNION ALL SELECT 'w' || ru.oid || '.' || ru.xmin FROM rel JOIN pg_catalog.pg_rewrite ru ON ru.ev_class = rel.oid
  UNION ALL SELECT 'p' || po.oid || '.' || po.xmin FROM rel JOIN pg_catalog.pg_policy po ON po.polrelid = rel.oid
  UNION ALL SELECT 's' || sq.seqrelid || '.' || sq.xmin FROM rel JOIN pg_catalog.pg_sequence sq ON sq.seqrelid = rel.oid
  UNION ALL SELECT 'o' || p.oid || '.' || p.xmin FROM dep JOIN pg_catalog.pg_proc p ON dep.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = dep.objid
  UNION ALL SELECT 'y' || t.oid || '.' || t.xmin FROM dep JOIN pg_catalog.pg_type t ON dep.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = dep.objid
  UNION ALL SELECT 'z' || tc.oid || '.' || tc.xmin FROM dep JOIN pg_catalog.pg_type t ON dep.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
    AND t.oid = dep.objid JOIN pg_catalog.pg_class tc ON tc.oid = t.typrelid
  UNION ALL SELECT 'x' || a.attrelid || '.' || a.attnum || '.' || a.xmin FROM dep JOIN pg_catalog.pg_type t
    ON dep.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = dep.objid JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0
  UNION ALL SELECT 'e' || e.oid || '.' || e.xmin FROM dep JOIN pg_catalog.pg_enum e ON dep.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND e.enumtypid = dep.objid
  UNION ALL SELECT 'k' || co.oid || '.' || co.xmin FROM dep JOIN pg_catalog.pg_constraint co ON dep.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND co.contypid = dep.objid
  UNION ALL SELECT 'l' || d.oid || '.' || d.xmin FROM dep JOIN pg_catalog.pg_default_acl d ON dep.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass AND d.oid = dep.objid
  UNION ALL SELECT 'q' || op.oid || '.' || op.xmin FROM dep JOIN pg_catalog.pg_operator op ON dep.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND op.oid = dep.objid
)
SELECT CASE WHEN EXISTS (SELECT FROM dep WHERE dep.classid NOT IN ('pg_catalog.pg_class'::pg_catalog.regclass,
         'pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_type'::pg_catalog.regclass,
         'pg_catalog.pg_default_acl'::pg_catalog.regclass, 'pg_catalog.pg_operator'::pg_catalog.regclass))
       THEN NULL ELSE pg_catalog.md5(pg_catalog.string_agg(x, ',' ORDER BY x)) END
  FROM item
