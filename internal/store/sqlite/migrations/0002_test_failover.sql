-- A machine's test failover (docs/control.md): the flag (''
-- none, running, cleaning-up) and the current or last test failover as
-- JSON (control.TestFailover; 'null': none ever).
ALTER TABLE machines ADD COLUMN test_failover TEXT NOT NULL DEFAULT '';
ALTER TABLE machines ADD COLUMN test TEXT NOT NULL DEFAULT 'null';
