"""``python -m urlkit.bench``: how fast urlkit trains and evaluates, next to the machine's
ceiling and a peer (sentence-transformers' CrossEncoder), in one table. See
docs/performance.md for the figures and what they decided.

Modules: ``measure`` (interleaved timing, the matmul ceiling), ``flops`` (model FLOPs),
``workload`` (the default experiment's model and data), ``training``, ``evaluation``,
``peer``, ``process`` (peak memory and thread settings, in fresh processes), ``cli`` (the table).
"""
