"""What stakeflow keeps besides the trace store's spans, and the one read-only SQL every SQL entry point runs.

A library floor (activities, services and entry points use it; it imports the contracts, the agents' types,
the configuration and the trace store, nothing above). One public module per job:

* ``file_lock``: one writer at a time per file, across threads, processes and hosts (POSIX locks);
* ``datasets``: captured model calls as fine-tuning data (`stakeflow dataset export`, the learn loop);
* ``promotions``: the learn loop's decisions, read by every run;
* ``readonly_sql``: the statement check and DuckDB lock-down of ``sql_query`` and `stakeflow sql`.
"""
