"""promotions.json under concurrent writers: every promotion recorded, the file never damaged.

Two processes and two threads promote at the same time (the learn loop's promote step on two workflows
workers, or two threads of one), as on a learn volume several hosts share.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from stakeflow.agents.evals import Promotion
from stakeflow.config import Settings
from stakeflow.stores.promotions import learn_dir, promote, promotions, revoke

PER_WRITER = 60

WRITER = """
import sys
from stakeflow.agents.evals import Promotion
from stakeflow.config import Settings
from stakeflow.stores.promotions import learn_dir, promote

folder = learn_dir(Settings(home=sys.argv[1]))
for n in range(int(sys.argv[3])):
    promote(folder, Promotion(agent=f"{sys.argv[2]}-{n}", open_model=f"lora-{n}", configured="base"))
"""


def test_two_processes_and_two_threads_promoting_at_once_lose_nothing(tmp_path):
    settings = Settings(home=tmp_path / "home")
    folder = learn_dir(settings)
    promote(folder, Promotion(agent="gone", open_model="old", configured="base"))
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(settings.home), f"process{i}", str(PER_WRITER)])
        for i in (1, 2)
    ]
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for n in range(PER_WRITER):
                promote(folder, Promotion(agent=f"{name}-{n}", open_model=f"lora-{n}", configured="base"))
            if name == "thread1":
                revoke(folder, "gone")
        except BaseException as e:  # a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(f"thread{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = [p.wait(120) for p in processes]
    assert errors == [] and codes == [0, 0], (errors, codes)
    recorded = promotions(folder)
    expected = {f"{w}-{n}" for w in ("process1", "process2", "thread1", "thread2") for n in range(PER_WRITER)}
    assert set(recorded) == expected  # all 240, and the revoked one gone
    assert sorted(p.name for p in (settings.home / "learn").iterdir()) == ["promotions.json", "promotions.json.lock"]
