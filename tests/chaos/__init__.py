"""Chaos tests on real processes (marker ``chaos``): short by default, full with
``SNAKEPOOL_CHAOS_SCALE=full`` (``make chaos``). See :mod:`tests.chaos.harness`."""
