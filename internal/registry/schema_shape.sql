-- A schema's shape (Shape): one row per object, as (kind, name, whether it can run code, its fields as
-- name/value pairs, and the statement that makes it again when it goes missing, where there is one).
-- $1 is the schema. The search_path is pg_catalog alone, so names in the schema read qualified, and
-- names of objects are quoted where they need it: no two objects share a name here.
-- Default privileges that a role other than the schema's owner set for itself in the schema are left
-- out: any role may set them, they apply to nothing it can create there, and they are not the schema's.
WITH ns AS (SELECT n.oid, n.nspname, n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid = $1::pg_catalog.regnamespace::pg_catalog.oid),
dep AS (SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ns
        WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = ns.oid AND d.objsubid = 0
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_default_acl a WHERE d.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass
                          AND a.oid = d.objid AND a.defaclrole <> ns.nspowner)),
rel AS (SELECT c.oid, c.relname, c.relkind FROM pg_catalog.pg_class c
        JOIN dep ON dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.objid = c.oid)
SELECT 'schema', '', false,
       ARRAY['owner', pg_catalog.pg_get_userbyid(n.nspowner)::text, 'grants', coalesce(n.nspacl::text, '')]::text[], ''
  FROM pg_catalog.pg_namespace n, ns WHERE n.oid = ns.oid
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
         WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'relation' END,
       pg_catalog.quote_ident(c.relname), c.relkind IN ('v', 'm'),
       ARRAY['owner', pg_catalog.pg_get_userbyid(c.relowner)::text, 'grants', coalesce(c.relacl::text, ''),
             'row security', CASE WHEN c.relforcerowsecurity THEN 'forced' WHEN c.relrowsecurity THEN 'on' ELSE '' END,
             'persistence', c.relpersistence::text, 'options', coalesce(c.reloptions::text, ''),
             'definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) ELSE '' END,
             'sequence', coalesce((SELECT pg_catalog.format('%s start %s increment %s min %s max %s cache %s%s',
                   s.seqtypid::pg_catalog.regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                   CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END) FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.oid), '')],
       CASE WHEN c.relkind = 'v' THEN pg_catalog.format('CREATE VIEW %I.%I AS %s', ns.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid)) ELSE '' END
  FROM pg_catalog.pg_class c JOIN rel ON rel.oid = c.oid, ns
UNION ALL
SELECT 'column', pg_catalog.format('%I.%I', r.relname, a.attname), false,
       ARRAY['type', pg_catalog.format_type(a.atttypid, a.atttypmod),
             'not null', CASE WHEN a.attnotnull THEN 'yes' ELSE '' END,
             'default', coalesce(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), ''),
             'identity', a.attidentity::text, 'generated', a.attgenerated::text,
             'collation', CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::pg_catalog.regcollation::text ELSE '' END,
             'grants', coalesce(a.attacl::text, '')],
       CASE WHEN r.relkind IN ('r', 'p') AND a.attidentity = '' AND a.attgenerated = '' THEN
         pg_catalog.format('ALTER TABLE %I.%I ADD COLUMN %I %s%s%s', ns.nspname, r.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
           ' DEFAULT ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END)
       ELSE '' END
  FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum, ns
  WHERE r.relkind IN ('r', 'p', 'f', 'v', 'm')
UNION ALL
SELECT 'index', pg_catalog.quote_ident(ic.relname), false,
       ARRAY['definition', pg_catalog.pg_get_indexdef(i.indexrelid), 'valid', CASE WHEN i.indisvalid THEN 'yes' ELSE 'no' END],
       -- An index of a constraint comes back with its constraint.
       CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_constraint co WHERE co.conindid = i.indexrelid AND co.conrelid = r.oid) THEN ''
         ELSE pg_catalog.pg_get_indexdef(i.indexrelid) END
  FROM rel r JOIN pg_catalog.pg_index i ON i.indrelid = r.oid JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
UNION ALL
SELECT 'constraint', pg_catalog.format('%I.%I', r.relname, co.conname), false, ARRAY['definition', pg_catalog.pg_get_constraintdef(co.oid)],
       pg_catalog.format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', ns.nspname, r.relname, co.conname, pg_catalog.pg_get_constraintdef(co.oid))
  FROM rel r JOIN pg_catalog.pg_constraint co ON co.conrelid = r.oid, ns
UNION ALL
SELECT 'trigger', pg_catalog.format('%I.%I', r.relname, tg.tgname), true,
       ARRAY['definition', pg_catalog.pg_get_triggerdef(tg.oid), 'enabled', tg.tgenabled::text], pg_catalog.pg_get_triggerdef(tg.oid)
  FROM rel r JOIN pg_catalog.pg_trigger tg ON tg.tgrelid = r.oid AND NOT tg.tgisinternal
UNION ALL
SELECT 'rule', pg_catalog.format('%I.%I', r.relname, ru.rulename), true,
       ARRAY['definition', pg_catalog.pg_get_ruledef(ru.oid), 'enabled', ru.ev_enabled::text], pg_catalog.pg_get_ruledef(ru.oid)
  FROM rel r JOIN pg_catalog.pg_rewrite ru ON ru.ev_class = r.oid AND ru.rulename <> '_RETURN'
UNION ALL
SELECT 'policy', pg_catalog.format('%I.%I', r.relname, po.polname), true,
       ARRAY['command', po.polcmd::text, 'permissive', CASE WHEN po.polpermissive THEN 'yes' ELSE 'no' END,
             'roles', (SELECT coalesce(pg_catalog.string_agg(CASE WHEN x = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(x)::text END, ',' ORDER BY 1), '')
                       FROM pg_catalog.unnest(po.polroles) x),
             'using', coalesce(pg_catalog.pg_get_expr(po.polqual, po.polrelid), ''),
             'check', coalesce(pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid), '')], ''
  FROM rel r JOIN pg_catalog.pg_policy po ON po.polrelid = r.oid
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       pg_catalog.quote_ident(p.proname) || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', true,
       ARRAY['returns', coalesce(pg_catalog.pg_get_function_result(p.oid), ''), 'language', l.lanname::text,
             'security', CASE WHEN p.prosecdef THEN 'definer' ELSE 'invoker' END,
             'volatility', p.provolatile::text, 'strict', CASE WHEN p.proisstrict THEN 'yes' ELSE '' END,
             'settings', coalesce(p.proconfig::text, ''),
             'body', pg_catalog.md5(coalesce(p.prosrc, '') || coalesce(p.probin, '')),
             'owner', pg_catalog.pg_get_userbyid(p.proowner)::text, 'grants', coalesce(p.proacl::text, '')],
       CASE WHEN p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid) ELSE '' END
  FROM dep JOIN pg_catalog.pg_proc p ON dep.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = dep.objid
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
UNION ALL
SELECT 'type', pg_catalog.quote_ident(t.typname), false,
       ARRAY['kind', t.typtype::text,
             'labels', coalesce((SELECT pg_catalog.string_agg(e.enumlabel::text, ',' ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid), ''),
             'base', CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) ELSE '' END,
             'not null', CASE WHEN t.typnotnull THEN 'yes' ELSE '' END, 'default', coalesce(t.typdefault, ''),
             'constraints', coalesce((SELECT pg_catalog.string_agg(pg_catalog.pg_get_constraintdef(co.oid), ' ' ORDER BY co.conname)
                                      FROM pg_catalog.pg_constraint co WHERE co.contypid = t.oid), ''),
             'attributes', coalesce((SELECT pg_catalog.string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                                     FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), ''),
             'owner', pg_catalog.pg_get_userbyid(t.typowner)::text, 'grants', coalesce(t.typacl::text, '')], ''
  FROM dep JOIN pg_catalog.pg_type t ON dep.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = dep.objid
UNION ALL
-- Everything else a schema can hold (operators, statistics, collations, conversions, text search
-- objects, default privileges...), by the catalog's own name for it.
SELECT o.type, o.identity, dep.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass,
       ARRAY['grants', coalesce((SELECT d.defaclacl::text FROM pg_catalog.pg_default_acl d
                                 WHERE dep.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass AND d.oid = dep.objid), '')], ''
  FROM dep, LATERAL pg_catalog.pg_identify_object(dep.classid, dep.objid, 0) o
  WHERE dep.classid NOT IN ('pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass,
                            'pg_catalog.pg_type'::pg_catalog.regclass)
