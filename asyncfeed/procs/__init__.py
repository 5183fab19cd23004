"""``workers=Processes(n)`` (or ``processes=N``): fetch calls in worker processes, each with
its own event loop.

- ``options.py``: the validated settings (``Processes``) and what each worker runs.
- ``pool.py``: the feed's side: start, calls in flight, watch, stop by a deadline.
- ``worker.py``: the worker process: one event loop serving fetch calls.
- ``wire.py``: framed messages over a Unix socket.
- ``ring.py``: the shared-memory ring chunk data travels through.
- ``reaping.py``: worker processes ending: their sentinels awaited, reaped, exits named.
"""
