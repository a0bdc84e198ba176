"""Evaluation: trec metrics of reranked splits."""
