"""Webhook storms (issue 24): a hook's ``max_runs_per_minute`` and ``max_concurrent_runs`` hold across server
processes (two apps, each with its own Temporal client and nothing shared but Temporal); a delivery over either is
answered 429 with Retry-After and a JSON reason and starts nothing, and its redelivery later starts it once.
"""

from __future__ import annotations

import asyncio

from stakeflow.webhooks import create_app
from tests.agent_script import plan
from tests.fakes import Reply
from tests.support import running_workers
from tests.webhook_support import (
    ENVIRON,
    ServerThread,
    assert_not_started,
    hook,
    hook_settings,
    http,  # noqa: F401 (fixture)
    issue_body,
    new_delivery,
    open_fake,  # noqa: F401 (fixture)
    signed,
    terminate,
)


def storm_settings(tmp_path, client, open_fake):
    open_fake.script(lambda body: Reply.delayed(20, plan(("Look", None))))  # runs stay running a while
    hooks = {"rated": hook(max_runs_per_minute=5), "narrow": hook(max_concurrent_runs=2)}
    return hook_settings(
        tmp_path, client, hooks=hooks, open_base_url=open_fake.url, open_model="qwen-test", open_dialect="vllm"
    )


async def deliver(http, url, name, body, delivery):
    return await http.post(f"{url}/hooks/{name}", content=body, headers=signed(body, delivery))


async def test_max_runs_per_minute_holds_across_two_servers(client, tmp_path, http, open_fake):
    settings = storm_settings(tmp_path, client, open_fake)
    deliveries = [(issue_body(title=f"storm {i}"), new_delivery()) for i in range(12)]
    with (
        ServerThread(create_app(settings, environ=ENVIRON)) as a,
        ServerThread(create_app(settings, environ=ENVIRON)) as b,
    ):
        async with running_workers(client, settings, roles=("workflows",)):
            answers = await asyncio.gather(
                *(deliver(http, (a, b)[i % 2].url, "rated", body, d) for i, (body, d) in enumerate(deliveries))
            )
            started = [r.json()["workflow_id"] for r in answers if r.status_code == 202]
            refused = [(r, d) for r, (_, d) in zip(answers, deliveries, strict=True) if r.status_code == 429]
            assert len(started) == 5 and len(refused) == 7
            r, delivery = refused[0]
            assert int(r.headers["retry-after"]) >= 1
            assert "started 5 runs in the last minute (max_runs_per_minute = 5)" in r.json()["error"]
            assert "nothing started" in r.json()["error"]
            for _, d in refused:
                await assert_not_started(client, f"hook-rated-{d}")
            again = await deliver(http, b.url, "rated", *deliveries[[d for _, d in deliveries].index(delivery)])
            assert again.status_code == 429  # still within the minute
            first = deliveries[[r.status_code for r in answers].index(202)]
            duplicate = await deliver(http, b.url, "rated", *first)  # an admitted delivery, redelivered
            assert duplicate.status_code == 202 and duplicate.json()["duplicate"] is True
            for workflow_id in started:
                await terminate(client, workflow_id)


async def test_max_concurrent_runs_and_a_redelivery_after_they_end(client, tmp_path, http, open_fake):
    settings = storm_settings(tmp_path, client, open_fake)
    deliveries = [(issue_body(title=f"narrow {i}"), new_delivery()) for i in range(5)]
    with (
        ServerThread(create_app(settings, environ=ENVIRON)) as a,
        ServerThread(create_app(settings, environ=ENVIRON)) as b,
    ):
        async with running_workers(client, settings, roles=("workflows",)):
            answers = await asyncio.gather(
                *(deliver(http, (a, b)[i % 2].url, "narrow", body, d) for i, (body, d) in enumerate(deliveries))
            )
            started = [r.json()["workflow_id"] for r in answers if r.status_code == 202]
            assert len(started) == 2 and [r.status_code for r in answers].count(429) == 3
            refused = [d for r, d in zip(answers, deliveries, strict=True) if r.status_code == 429]
            assert (
                "has 2 runs running (max_concurrent_runs = 2)"
                in answers[[r.status_code for r in answers].index(429)].json()["error"]
            )
            for workflow_id in started:  # the running runs end
                await terminate(client, workflow_id)
            later = await deliver(http, a.url, "narrow", *refused[0])  # the sender redelivers: it starts, once
            assert later.status_code == 202 and later.json()["duplicate"] is False
            once_more = await deliver(http, b.url, "narrow", *refused[0])
            assert once_more.status_code == 202 and once_more.json()["duplicate"] is True
            assert once_more.json()["workflow_id"] == later.json()["workflow_id"]
            await terminate(client, later.json()["workflow_id"])
