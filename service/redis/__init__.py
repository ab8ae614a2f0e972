"""Redis mode (``GRAM_QUEUE_URL=redis://host:port/db``): API replicas enqueue jobs on Redis Streams,
``gram worker`` processes run the engines and write the Results back.

- ``queue``: the API side, ``RedisJobQueue`` (a JobQueue, service/queues.py).
- ``worker``: the worker side, ``Worker``; ``process``: the `gram worker` process around it.
- ``keys``: the key layout and the client both sides connect with; ``scripts``: the Lua scripts that
  make submit, complete, refresh, dead-letter and cancel atomic; ``cache``: the result cache.

The data path of one job is described in docs/ARCHITECTURE.md and in queue.py's docstring.
"""
