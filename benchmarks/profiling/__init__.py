"""Profiles of asyncfeed's costly paths, for the core's authors: ``python -m benchmarks.profiling``.

Nothing here changes what ``make bench`` measures. See ``__main__.py`` for the cases.
"""
