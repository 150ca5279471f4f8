-- A machine's current or last failover (docs/control-plane.md) as JSON
-- (control.Failover; 'null': none ever).
ALTER TABLE machines ADD COLUMN failover TEXT NOT NULL DEFAULT 'null';
