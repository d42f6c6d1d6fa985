-- The order sweep reads the rows whose outcome is not known yet (pending, or unknown after a
-- submit that could not confirm it), oldest first, every ORDER_SWEEP_INTERVAL_S. A partial
-- index holds only those few rows, so the sweep never walks the settled history.
CREATE INDEX order_audit_unsettled_created_at_idx
    ON order_audit (created_at, id) WHERE status IN ('pending', 'unknown');
