"""``workers=RayActors(n)``: fetch calls on Ray actors, anywhere in a Ray cluster.

- ``options.py``: the public option group :class:`~asyncfeed.ray.options.RayActors`
  (imports without Ray).
- ``connect.py``: joining the running Ray, or starting (and stopping) a local one.
- ``backend.py``: the feed's side: start, faults, stop by a deadline.
- ``dispatch.py``: the calls of one turn of the loop batched per actor, outcomes handed back.
- ``slots.py``: one actor across its restarts.
- ``calls.py``: one call, a batch of them, results copied out of the object store.
- ``actor.py``: what runs in each actor: its own event loop serving fetch calls.

Nothing here is imported by ``import asyncfeed``; Ray itself is imported only when a feed
with ``RayActors`` starts.
"""
