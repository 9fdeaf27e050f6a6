-- Each hello starts a new connection epoch of its runtime. A heartbeat still queued on a
-- connection the runtime has since replaced (on another replica, say) carries a head older than
-- the one the newer hello showed: with the epoch the witness knows such a head is stale, checks
-- it for forks, and does not flag the runtime as rewound for it.
ALTER TABLE runtimes ADD COLUMN connection_epoch bigint NOT NULL DEFAULT 0;
