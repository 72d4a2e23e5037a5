"""Background work (outbox relay to RQ, notification channels, deadline sweeps).

The engine already writes outbox rows and deadline rows in each command's transaction; the
relay and the sweeper that act on them are built in the background-work issue.
"""
