-- Schema version 5: a job's dead letters counted by reason. `in_doubt`
-- already was; `permanent` and `exhausted` join it, so that
-- `permanent + exhausted + in_doubt = dead` for every job, past the detail
-- limit too. Every dead letter still has its row in `dead`, with its kind.
ALTER TABLE jobs ADD COLUMN permanent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN exhausted INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET
  permanent = (SELECT count(*) FROM dead WHERE dead.job = jobs.no AND dead.kind = 1),
  exhausted = (SELECT count(*) FROM dead WHERE dead.job = jobs.no AND dead.kind = 2);
