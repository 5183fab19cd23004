"""The asyncfeed benchmark suite: ``python -m benchmarks`` (``make bench``).

asyncfeed against the classic thread design (Caffe2's ``data_workers``, re-implemented in
:mod:`benchmarks.classic`), PyTorch DataLoader, ``torchdata.nodes`` and SPDL, on four
workloads: overhead, rebatch, http, device handoff. Every measurement runs in a fresh
process; every batch is checked and every row accounted for. See ``benchmarks/README.md``.

Some modules also run on their own (``python -m benchmarks.handoff``).
"""
