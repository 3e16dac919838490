-- Schema version 6: each endpoint's circuit breaker (wds_core::health).
-- An endpoint without a row is closed.
CREATE TABLE circuits (
  endpoint TEXT PRIMARY KEY,
  state    TEXT NOT NULL               -- CircuitState as text
) WITHOUT ROWID;
