"""`stakeflow run` printing the answer as the model writes it, from the run's event stream (agents/types/events.py).

On by default when stdout is a terminal (``--stream`` / ``--no-stream`` to choose): a pipe gets the final answer once,
as before, never a replaced answer with its replacement. The text goes to stdout as it comes; a re-asked or escalated
answer, or an attempt retried after a worker died, ends the line and says on stderr that what follows replaces it.
When the run ends, the final answer is what counts: if what was shown is not it, the final answer is printed whole.
"""

from __future__ import annotations

import logging
import sys

import click
from temporalio.client import Client

from stakeflow.agents.types import AnswerSoFar, Progress
from stakeflow.cli.common import err
from stakeflow.core.contracts import PROGRESS_QUERY
from stakeflow.core.errors import InputError
from stakeflow.services import runs

log = logging.getLogger("stakeflow.cli")


class AnswerPrinter:
    """Follows a run's stream and writes its answer to stdout as it grows; ``before`` is called with the run's
    progress once, before the first text (so every finished step's line comes before the answer's)."""

    def __init__(self, before) -> None:
        self.answer = AnswerSoFar()
        self.shown = ""  # the text on the current line, from the current answer call
        self.replaced = False
        self._before = before

    async def watch(self, client: Client, workflow_id: str) -> None:
        try:
            async for event in runs.run_events(client, workflow_id):
                change = self.answer.apply(event)
                if change == "reset" and self.shown:
                    click.echo("")
                    err("  (the answer was asked again: the text below replaces the text above)")
                    self.shown, self.replaced = "", True
                elif change == "delta":
                    await self._write(client, workflow_id)
        except InputError as e:  # a worker from before streams: the answer comes at the end, as it used to
            log.info("no answer stream: %s", e)
        except Exception as e:  # the stream only shows the answer early: the run's result still comes, whole
            log.warning("the answer stream stopped (%s): the answer comes when the run ends", type(e).__name__)

    async def _write(self, client: Client, workflow_id: str) -> None:
        if not self.shown and self._before is not None:
            try:
                progress = await client.get_workflow_handle(workflow_id).query(PROGRESS_QUERY, result_type=Progress)
                self._before(progress.steps, progress.total_steps)
            except Exception:  # the steps' lines then come from the step printer, a moment later
                pass
            self._before = None
        new = self.answer.text[len(self.shown) :]
        click.echo(new, nl=False)
        sys.stdout.flush()
        self.shown = self.answer.text

    def finish(self, answer: str) -> bool:
        """End the streamed answer; True when what was shown is the final ``answer`` (else nothing or not it)."""
        if not self.shown:
            return False
        click.echo("")
        if self.shown.strip() == answer:
            return True
        err("  (the final answer differs from the text streamed above: it follows)")
        return False
