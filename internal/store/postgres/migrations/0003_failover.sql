-- A machine's current or last failover (docs/control-plane.md) as JSON
-- (control.Failover; 'null': none ever).
ALTER TABLE machines ADD COLUMN failover json NOT NULL DEFAULT 'null';
