"""CPU per model call in the worker's own code: pydantic-ai's Agent.run against its direct request API.

After the concurrency work (bench/README.md, "concurrency.py"), pydantic-ai's agent run is the largest part of
a loaded worker's profile. This measures what the Agent machinery costs above a model request, in one process,
against tests/fakes' FakeOpenAIServer on 127.0.0.1 answering at once:

  (agent)   ``Agent(model, output_type=NativeOutput(Out), retries=0).run(prompt)``: what ``call_model`` did
            until issue 27 (one cached agent per shape)
  (direct)  ``pydantic_ai.direct.model_request(model, messages)`` and the output validated with the output model:
            what ``call_model`` did from issue 27's first change (activities/model_shapes.py)
  (route)   the same through the open route's own model and client (activities/open_chat.py: the request sent
            without the openai SDK's parameter transform, its parameters customized once; and since 2026-12-08,
            after the warm-up's first two, over aiohttp with the SDK's own headers, activities/open_transport.py):
            what ``call_model`` does now
  (client)  the bare ``openai`` client's ``chat.completions.create``: the anchor, the floor of any route

CPU is ``time.process_time()`` of the whole process per call, so the fake server's work (the same in every
row) is included.

    python bench/model_request.py               # 300 calls per variant after 20 warm-up calls, 3 rounds
    python bench/model_request.py --calls 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from openai import AsyncOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.direct import model_request
from pydantic_ai.messages import ModelRequest, SystemPromptPart, UserPromptPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.output import OutputObjectDefinition
from pydantic_ai.providers.openai import OpenAIProvider

from stakeflow.activities.open_chat import OpenChatModel, OpenRouteClient
from tests.fakes import FakeOpenAIServer


class Out(BaseModel):
    answer: str
    steps: list[str]


ANSWER = '{"answer": "x", "steps": ["a", "b"]}'


async def measure(calls: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    with FakeOpenAIServer(model="m") as fake:
        fake.script(lambda body: ANSWER)
        client = AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0)
        model = OpenAIChatModel("m", provider=OpenAIProvider(openai_client=client))
        route_client = OpenRouteClient(base_url=fake.url, api_key="k", max_retries=0)
        route_model = OpenChatModel("m", provider=OpenAIProvider(openai_client=route_client))
        agent = Agent(model, output_type=NativeOutput(Out), system_prompt="sys", retries=0)
        # The output as the agent asks for it (NativeOutput: a JSON-schema response format), one object for every
        # call, as call_model's ShapeCache keeps one per shape; each model customizes it for its profile.
        params = ModelRequestParameters(
            output_mode="native", output_object=OutputObjectDefinition(json_schema=Out.model_json_schema(), name="Out")
        )
        messages = [ModelRequest(parts=[SystemPromptPart("sys"), UserPromptPart("hello")])]
        settings = {"temperature": 0.0}

        async def by_agent() -> None:
            result = await agent.run("hello", model_settings=settings)
            assert result.output.answer == "x"

        async def direct() -> None:
            response = await model_request(model, messages, model_settings=settings, model_request_parameters=params)
            assert Out.model_validate_json(response.text or "").answer == "x"

        async def route() -> None:
            response = await model_request(
                route_model, messages, model_settings=settings, model_request_parameters=params
            )
            assert Out.model_validate_json(response.text or "").answer == "x"

        async def bare() -> None:
            r = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello"}], temperature=0.0
            )
            assert r.choices[0].message.content == ANSWER

        variants = {"agent": by_agent, "direct": direct, "route": route, "client": bare}
        found: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for key, fn in variants.items():  # interleaved, so drift hits all of them
                for _ in range(warmup):
                    await fn()
                started = time.process_time()
                for _ in range(calls):
                    await fn()
                found[key].append((time.process_time() - started) / calls * 1000)
        await client.close()
        await route_client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per variant and round (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls before each (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args()
    found = asyncio.run(measure(args.calls, args.warmup, args.rounds))
    anchor = statistics.median(found["client"])
    labels = {
        "agent": "(agent) Agent.run, NativeOutput (call_model first)",
        "direct": "(direct) direct.model_request (call_model before)",
        "route": "(route) the same, open_chat.py (call_model now)",
        "client": "(client) bare openai client (anchor)",
    }
    print(
        f"model request CPU, {args.calls} calls x {args.rounds} rounds; {platform.machine()}, Python {platform.python_version()}"
    )
    print(f"{'variant':<52} {'CPU ms/call':>12} {'above (client)':>15}")
    for key, label in labels.items():
        med = statistics.median(found[key])
        print(f"{label:<52} {med:12.2f} {med - anchor:15.2f}")


if __name__ == "__main__":
    main()
