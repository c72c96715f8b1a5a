"""Unsupervised anomaly models over numeric feature matrices.

Every model is an `AnomalyModel` (robust scaling, an estimator, thresholds calibrated to a
target false-alarm rate, safe persistence). `ANOMALY_MODELS` names the registered ones; the
bench (`tapetum bench detectors`) and the contract test run every entry.
"""

from __future__ import annotations

from collections.abc import Callable

from tapetum.anomaly.autoencoder import AutoencoderEnsemble
from tapetum.anomaly.iforest import IsolationForest
from tapetum.anomaly.knn import KNNDistance
from tapetum.anomaly.model import AnomalyModel, schema_hash
from tapetum.anomaly.zscore import RobustZ


def _iforest(seed: int = 0, target_fpr: float = 0.01) -> AnomalyModel:
    return AnomalyModel(IsolationForest(seed=seed), target_fpr=target_fpr, seed=seed)


def _autoencoder(seed: int = 0, target_fpr: float = 0.01) -> AnomalyModel:
    return AnomalyModel(AutoencoderEnsemble(seed=seed), target_fpr=target_fpr, seed=seed)


def _knn(seed: int = 0, target_fpr: float = 0.01) -> AnomalyModel:
    return AnomalyModel(KNNDistance(seed=seed), target_fpr=target_fpr, seed=seed)


def _robust_z(seed: int = 0, target_fpr: float = 0.01) -> AnomalyModel:
    return AnomalyModel(RobustZ(), target_fpr=target_fpr, seed=seed)


#: Model name -> factory(seed, target_fpr) of an unfitted model.
ANOMALY_MODELS: dict[str, Callable[..., AnomalyModel]] = {
    "iforest": _iforest,
    "knn": _knn,
    "autoencoder": _autoencoder,
    "robust-z": _robust_z,
}

__all__ = ["ANOMALY_MODELS", "AnomalyModel", "schema_hash"]
