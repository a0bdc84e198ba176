"""urlkit: train and dissect LLM rerankers with the Unified Reranking Loss (URL).

The loss lives in :mod:`urlkit.loss` (pure torch); everything else wires it to models,
data, training and analysis. See the README for the one-line use::

    python -m urlkit.run weight=sft direction=cl
"""

__version__ = "0.1.0"


def rerank(*args, **kwargs):
    """Score documents for a query with a trained run (see :func:`urlkit.inference.rerank`)."""
    from urlkit.inference import rerank as _rerank  # lazy: keeps `import urlkit` light

    return _rerank(*args, **kwargs)
