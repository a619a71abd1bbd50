"""stakeflow: durable, accountable hybrid agents on Temporal.

This package is the app shell: settings, errors, the CLI, and the services the CLI
starts (dev server, embedded model, background worker).
"""

__version__ = "0.2.0"
