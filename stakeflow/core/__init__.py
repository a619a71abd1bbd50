"""Pure definitions the workflow sandbox may import: errors, contracts, semantic conventions, the bill's line.

No I/O, no settings, no clients: workflow code imports these (passed through the sandbox), and so can
every other process. The shell — CLI, webhook server, local services, settings — lives beside it.
"""
