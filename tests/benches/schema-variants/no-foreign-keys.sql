-- What the worker bench applies without any foreign key on the tables an event writes.
-- A measurement only (BENCHMARKS.md, "What the schema could buy at most"); never a migration.
--   CALLGATE_BENCH_SQL="$(cat tests/benches/schema-variants/no-foreign-keys.sql)" deploy/local/with-stack.sh cargo bench -p callgate-tests --bench worker_throughput -- 30000 1
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
           WHERE contype = 'f' AND conrelid::regclass::text IN ('calls', 'appointments', 'processed_events', 'customers', 'appointment_status_history')
  LOOP EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.t, r.conname); END LOOP;
END $$;
