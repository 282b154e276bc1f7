-- With no-foreign-keys.sql, the upper bound the schema puts on the worker bench: the tables an
-- event writes, stripped of every foreign key, check, secondary index and trigger (unique keys
-- stay: the worker's upserts and its dedupe need them). A measurement only (BENCHMARKS.md,
-- "What the schema could buy at most"); never a migration.
--   CALLGATE_BENCH_SQL="$(cat tests/benches/schema-variants/{no-foreign-keys,stripped}.sql)" \
--     deploy/local/with-stack.sh cargo bench -p callgate-tests --bench worker_throughput -- 30000 1
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
           WHERE contype = 'c' AND conrelid::regclass::text IN ('calls', 'appointments', 'processed_events', 'customers', 'appointment_status_history')
  LOOP EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.t, r.conname); END LOOP;
  FOR r IN SELECT i.indexrelid::regclass AS ix FROM pg_index i
           WHERE i.indrelid::regclass::text IN ('calls', 'appointments', 'processed_events', 'customers', 'appointment_status_history')
             AND NOT i.indisunique AND NOT i.indisprimary
  LOOP EXECUTE format('DROP INDEX %s', r.ix); END LOOP;
  FOR r IN SELECT tgrelid::regclass AS t, tgname FROM pg_trigger
           WHERE NOT tgisinternal AND tgrelid::regclass::text IN ('calls', 'appointments', 'customers')
  LOOP EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.t); END LOOP;
END $$;
