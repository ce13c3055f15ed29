"""Downstream use of frozen AION-1 embeddings: probes, attentive pooling, similarity search, retrieval metrics.

Needs the ``downstream`` extra for FAISS (approximate search; exact search falls back to PyTorch without it) and
matplotlib (plots).
"""

from aion_fast.downstream.metrics import accuracy, confusion_matrix, dcg_at_k, ndcg_at_k, r2_score, recall_at_k
from aion_fast.downstream.pooling import AttentivePooling
from aion_fast.downstream.probes import AttentiveProbe, LinearProbe, MLPProbe, Probe, fit_probe, train_test_split
from aion_fast.downstream.search import EmbeddingIndex

__all__ = [
    "AttentivePooling",
    "AttentiveProbe",
    "EmbeddingIndex",
    "LinearProbe",
    "MLPProbe",
    "Probe",
    "accuracy",
    "confusion_matrix",
    "dcg_at_k",
    "fit_probe",
    "ndcg_at_k",
    "r2_score",
    "recall_at_k",
    "train_test_split",
]
