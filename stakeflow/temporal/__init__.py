"""Temporal, as every stakeflow process meets it: the plugin, the connection, the payload codec, the namespace's
search attributes, tracing and metrics, and the constants deploy/ relies on.

A library floor: it imports the contracts, the agents' types, the configuration and the other libraries (the
trace store, for spans), never an activity, a workflow, a worker, a service or an entry point (the plugin is
given the workflows and activity holders it registers). One public module per job, imported by name
(``from stakeflow.temporal.connection import connect``):

* ``plugin``: ``StakeflowPlugin``, what a client, worker or replayer takes to work with stakeflow (converter,
  codec, tracing, sandbox; on stakeflow's queues, each role's workflows and activities);
* ``connection``: ``connect``, the one way a process gets a Temporal client, and what a failed connect means;
* ``codec``: payload encryption (AES-256-GCM, key rotation) and the data converter;
* ``namespace``: the search attributes a namespace needs, checked and registered;
* ``telemetry``: the process's OpenTelemetry tracer provider;
* ``sandbox``: the workflow sandbox, with stakeflow's pure modules passed through;
* ``metrics``: a worker's Prometheus endpoint;
* ``cluster``: the ports, queues and paths deploy/ relies on.
"""
