"""Worker processes that poll stakeflow's task queues."""
