"""stakeflow: durable, accountable hybrid agents on Temporal.

The one import package stakeflow installs. Its subpackages stand on floors, each importing only its own and
those below: contracts (``core``), agents, workflows, configuration (``config``), libraries (``temporal``,
``traces``, ``prices``, ``stores``, ``endpoints``, ``local``), activities, workers, services, and the entry points
(``cli``, ``webhooks``, ``codec_server``). README, "Layout", has the map; tests/test_layers.py holds it.
"""

__version__ = "0.2.0"
