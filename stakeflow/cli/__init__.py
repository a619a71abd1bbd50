"""The `stakeflow` command. Commands parse, call a service function (``stakeflow.services``), print.

An entry point: the top floor, which may import anything (README, "Layout"). One module per responsibility:

* ``common``: settings, the Temporal client and run lookup, friendly errors, output helpers;
* ``stack``: the local stack and long-running processes (`up`, `down`, `doctor`, `worker`, `models`, `serve`,
  `codec-server`, `codec-key`);
* ``runs``: `run`, `status`, `result`, `cancel`;
* ``approvals``: `approve`, `reject`, `list`, `admin`;
* ``catalogue``: `tools`, `agents`, `evals`; ``listing``: every tool a run could use, described as a worker
  describes it (it starts MCP servers and loads Python tools the way a worker's activities do);
* ``learn``: `dataset export`, `evals replay`, `models lora`, `learn`;
* ``costs``: the trace store's readers (`trace`, `costs`, `sql`, `prices`);
* ``report``: `report`, the cost-and-quality dashboard as an HTML file;
* ``budgets``: `budgets`, the frontier budgets today.
"""

from __future__ import annotations

import os
import sys

import click

from stakeflow.cli.approvals import admin, approve, list_runs, reject
from stakeflow.cli.budgets import budgets
from stakeflow.cli.catalogue import agents, evals, tools
from stakeflow.cli.common import err
from stakeflow.cli.costs import costs, prices, sql, trace
from stakeflow.cli.learn import dataset, learn
from stakeflow.cli.report import report
from stakeflow.cli.runs import cancel, result, run, status
from stakeflow.cli.stack import codec_key, codec_server, doctor, down, models, serve, up, worker

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stakeflow")
def cli() -> None:
    """Durable hybrid agents: each step on the open model or the frontier, by its stakes."""


from stakeflow.cli.learn import lora_group, replay_command  # noqa: E402 (after the groups it extends)

evals.add_command(replay_command())
models.add_command(lora_group)

for command in (
    up,
    down,
    run,
    status,
    result,
    cancel,
    worker,
    doctor,
    models,
    serve,
    tools,
    agents,
    evals,
    dataset,
    learn,
    trace,
    costs,
    sql,
    prices,
    budgets,
    report,
    approve,
    reject,
    list_runs,
    admin,
    codec_server,
    codec_key,
):
    cli.add_command(command)


def main() -> None:
    """Console entry point. Ends with os._exit: temporalio can crash at interpreter exit (sdk-python#300)."""
    code = 0
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err("aborted")
        code = 1
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except click.exceptions.Exit as e:
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # the last guard: one line, unless debugging
        if os.environ.get("STAKEFLOW_DEBUG") == "1":
            raise
        err(f"Error: unexpected {type(e).__name__}: {e} (STAKEFLOW_DEBUG=1 shows the traceback)")
        code = 1
    from stakeflow.temporal.telemetry import flush

    flush()  # spans a command made (none today but the worker's, which shuts down itself) reach their exporters
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
