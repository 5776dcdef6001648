"""Ratio benchmarks of the interpreter pool: ``python -m benchmarks`` (``make bench``).

Every figure that has a target is a ratio of two things measured in the same run, so
that the noise of a shared machine hits both sides; see ``benchmarks/README.md``.
"""
