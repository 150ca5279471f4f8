-- A machine's protection back to the primary site and its failback
-- (docs/control-plane.md) as JSON (control.Reverse; 'null': none).
ALTER TABLE machines ADD COLUMN reverse TEXT NOT NULL DEFAULT 'null';
