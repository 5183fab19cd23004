"""Runners for every pipeline the benchmarks compare: asyncfeed, the classic thread design and
the peers (PyTorch DataLoader, ``torchdata.nodes``, SPDL).

Each peer module imports its library only when a runner is built, and turns an import failure
into :class:`~benchmarks.spec.Unavailable`, so a peer that did not install is reported as
such instead of failing the suite.
"""
