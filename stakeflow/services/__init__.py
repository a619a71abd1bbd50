"""The services the CLI and the webhook server call: each command parses, calls one of these, prints.

Below the entry points, above the libraries: a service imports the contracts, the agents' types, the
configuration and the libraries (Temporal, the trace store, the stores, the endpoints, the local processes),
never an activity, a workflow, a worker or an entry point. Workflows are started and queried by their names
(``stakeflow.core.contracts``). One public module per job:

* ``runs``: the one place that starts runs (the request, the start, the wait) and finds the ones that exist
  (by either id; status, result, cancel, approvals, listing);
* ``learn``: `stakeflow evals replay` and `stakeflow learn`;
* ``evals``: `stakeflow evals`: measured agreement and the routing it implies;
* ``reports``: which run an id names in the trace store (`trace`, `costs --run`);
* ``doctor``: every part a run needs, checked;
* ``render``: runs as the CLI and the webhook server show them.
"""
