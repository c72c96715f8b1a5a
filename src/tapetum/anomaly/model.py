"""An anomaly model: feature schema + robust scaler + estimator + calibrated thresholds.

`fit` learns from rows taken as normal: the scaler and the estimator on most of them, the
thresholds on a held-out part (in-sample scores of a forest or an autoencoder are optimistic), at
the target false-alarm rate, globally and per entity class. `score` maps raw scores to 0..1 with
0.5 at the threshold. Persistence: one npz file (arrays + JSON metadata: format version,
estimator name and version, feature-schema hash, checksum) or a JSON-able dict (arrays base64);
a model from another version, for other features, truncated or altered is refused with
ModelError.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tapetum.anomaly.arrays import decode_array, digest, encode_array, load_npz, save_npz
from tapetum.anomaly.autoencoder import AutoencoderEnsemble
from tapetum.anomaly.iforest import IsolationForest
from tapetum.anomaly.knn import KNNDistance
from tapetum.anomaly.scaling import RobustScaler, as_matrix
from tapetum.anomaly.threshold import Thresholds, to_unit
from tapetum.anomaly.zscore import RobustZ
from tapetum.errors import ModelError

FORMAT = "tapetum.anomaly"
FORMAT_VERSION = 1


class Estimator(Protocol):
    name: str
    version: int

    def fit(self, z: np.ndarray) -> Any: ...

    def score(self, z: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


ESTIMATORS: dict[str, Any] = {
    IsolationForest.name: IsolationForest,
    AutoencoderEnsemble.name: AutoencoderEnsemble,
    RobustZ.name: RobustZ,
    KNNDistance.name: KNNDistance,
}


def schema_hash(names: Sequence[str], dtypes: Sequence[str]) -> str:
    """Hash of the ordered (feature name, dtype) pairs a model was learnt on."""
    pairs = [[str(n), str(t)] for n, t in zip(names, dtypes, strict=True)]
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


class AnomalyModel:
    def __init__(
        self,
        estimator: Estimator,
        *,
        target_fpr: float = 0.01,
        holdout_fraction: float = 0.25,
        seed: int = 0,
        log: bool = True,
    ) -> None:
        self.estimator = estimator
        self.target_fpr = target_fpr
        self.holdout_fraction = holdout_fraction
        self.seed = seed
        self.scaler = RobustScaler(log=log)
        self.feature_names_: list[str] = []
        self.dtypes_: list[str] = []
        self.thresholds_: Thresholds | None = None
        self.rows_learnt_ = 0

    @property
    def name(self) -> str:
        return self.estimator.name

    @property
    def fitted(self) -> bool:
        return self.thresholds_ is not None

    @property
    def schema_hash(self) -> str:
        return schema_hash(self.feature_names_, self.dtypes_)

    # -- learning ----------------------------------------------------------------------------

    def fit(
        self,
        x: Any,
        feature_names: Sequence[str],
        dtypes: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
    ) -> AnomalyModel:
        names = [str(n) for n in feature_names]
        a = as_matrix(x, len(names))
        n = a.shape[0]
        if n == 0:
            raise ValueError("no rows to learn from")
        self.feature_names_ = names
        self.dtypes_ = [str(t) for t in dtypes] if dtypes is not None else ["float64"] * len(names)
        order = np.random.default_rng(self.seed).permutation(n)
        k = math.ceil(self.holdout_fraction * n) if n >= 20 else 0
        hold, train = np.sort(order[:k]), np.sort(order[k:])
        if k == 0:
            hold = train  # too few rows to spare: calibrate in-sample
        self.scaler.fit(a[train])
        self.estimator.fit(self.scaler.transform(a[train]))
        cal = self._raw_scaled(self.scaler.transform(a[hold]))
        cls = None if classes is None else [str(classes[i]) for i in hold.tolist()]
        self.thresholds_ = Thresholds.fit(cal, self.target_fpr, cls)
        self.rows_learnt_ = n
        return self

    # -- scoring -----------------------------------------------------------------------------

    def _check(self, x: Any) -> np.ndarray:
        if not self.fitted:
            raise ModelError(f"{self.name} model is not fitted")
        if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == len(self.feature_names_):
            return x  # the common case: no copy (the scaler never writes to its input)
        try:
            return as_matrix(x, len(self.feature_names_))
        except ValueError as exc:
            raise ModelError(f"{self.name} model: {exc}") from None

    def _raw_scaled(self, z: np.ndarray) -> np.ndarray:
        if z.shape[0] == 0:
            return np.zeros(0)
        s = np.asarray(self.estimator.score(z), dtype=np.float64)
        return np.asarray(np.nan_to_num(s, nan=0.0, posinf=np.finfo(np.float64).max))

    def zscores(self, x: Any) -> np.ndarray:
        """Robust z-score of every feature of every row (0 = the learnt median)."""
        return self.scaler.transform(self._check(x))

    def raw(self, x: Any) -> np.ndarray:
        """The estimator's own score (higher = more anomalous; always finite)."""
        unscaled = getattr(self.estimator, "score_unscaled", None)
        if unscaled is not None:
            a = self._check(x)
            return np.asarray(unscaled(a, self.scaler)) if a.shape[0] else np.zeros(0)
        return self._raw_scaled(self.zscores(x))

    def thresholds(self, n: int, classes: Sequence[str] | None = None) -> np.ndarray:
        assert self.thresholds_ is not None
        return self.thresholds_.of(n, classes)

    def score(self, x: Any, classes: Sequence[str] | None = None) -> np.ndarray:
        """0..1; 0.5 at the threshold calibrated for this row's class (or the global one)."""
        raw = self.raw(x)
        return to_unit(raw, self.thresholds(raw.shape[0], classes))

    def contributions(
        self, x: Any, idx: int, top: int = 3
    ) -> list[tuple[str, float, float, float]]:
        """The `top` features of row idx furthest from normal: (name, observed, typical, z)."""
        a = self._check(x)
        z = self.scaler.transform(a[idx : idx + 1])[0]
        typical = self.scaler.typical()
        order = np.argsort(-np.abs(z), kind="stable")[:top]
        return [(self.feature_names_[j], float(a[idx, j]), float(typical[j]), float(z[j]))
                for j in order.tolist() if z[j] != 0]  # fmt: skip

    # -- persistence -------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        if self.thresholds_ is None:
            raise ModelError(f"{self.name} model is not fitted: nothing to save")
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "estimator": self.estimator.name,
            "estimator_version": self.estimator.version,
            "estimator_params": self.estimator.params(),
            "scaler": self.scaler.params(),
            "feature_names": self.feature_names_,
            "dtypes": self.dtypes_,
            "schema_hash": self.schema_hash,
            "target_fpr": self.target_fpr,
            "holdout_fraction": self.holdout_fraction,
            "seed": self.seed,
            "thresholds": self.thresholds_.to_json(),
            "rows_learnt": self.rows_learnt_,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**self.scaler.arrays(), **self.estimator.arrays()}

    def save(self, path: str | Path) -> None:
        save_npz(path, self._arrays(), self._meta())

    def state(self) -> dict[str, Any]:
        arrays = self._arrays()
        return {**self._meta(), "sha256": digest(arrays),
                "arrays": {k: encode_array(v) for k, v in arrays.items()}}  # fmt: skip

    @classmethod
    def load(
        cls,
        path: str | Path,
        feature_names: Sequence[str] | None = None,
        dtypes: Sequence[str] | None = None,
    ) -> AnomalyModel:
        """A saved model; with feature_names (and dtypes) given, refused unless it was learnt
        on exactly those features in that order."""
        arrays, meta = load_npz(path)
        return cls._restore(meta, arrays, str(path), feature_names, dtypes)

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        feature_names: Sequence[str] | None = None,
        dtypes: Sequence[str] | None = None,
    ) -> AnomalyModel:
        if not isinstance(state, dict) or not isinstance(state.get("arrays"), dict):
            raise ModelError("anomaly model state: not a model (no arrays)")
        arrays = {k: decode_array(v, k) for k, v in state["arrays"].items()}
        if state.get("sha256") != digest(arrays):
            raise ModelError("anomaly model state: arrays do not match their checksum")
        return cls._restore(state, arrays, "anomaly model state", feature_names, dtypes)

    @classmethod
    def _restore(
        cls,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        where: str,
        feature_names: Sequence[str] | None,
        dtypes: Sequence[str] | None,
    ) -> AnomalyModel:
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{where}: model format {meta.get('format')!r} version "
                f"{meta.get('format_version')} is not {FORMAT!r} version {FORMAT_VERSION}; "
                "learn the model again with this Tapetum"
            )
        est_cls = ESTIMATORS.get(str(meta.get("estimator")))
        if est_cls is None or meta.get("estimator_version") != est_cls.version:
            raise ModelError(
                f"{where}: estimator {meta.get('estimator')!r} version "
                f"{meta.get('estimator_version')} is unknown to this Tapetum; learn again"
            )
        names = [str(n) for n in meta["feature_names"]]
        types = [str(t) for t in meta["dtypes"]]
        if schema_hash(names, types) != meta.get("schema_hash"):
            raise ModelError(f"{where}: feature schema hash does not match its feature list")
        if feature_names is not None:
            want_types = list(dtypes) if dtypes is not None else ["float64"] * len(feature_names)
            want = schema_hash(list(feature_names), want_types)
            if want != meta["schema_hash"]:
                missing = [n for n in feature_names if n not in names]
                extra = [n for n in names if n not in feature_names]
                detail = f"; missing {missing[:5]}" if missing else ""
                detail += f"; unexpected {extra[:5]}" if extra else ""
                if not detail:
                    detail = "; same names, different order or dtypes"
                raise ModelError(
                    f"{where}: learnt on features {meta['schema_hash']} ({len(names)} columns), "
                    f"these are {want} ({len(feature_names)} columns){detail}; learn again"
                )
        try:
            est = est_cls.restore(meta["estimator_params"], arrays)
            scaler = RobustScaler.restore(meta["scaler"], arrays)
            thresholds = Thresholds.from_json(meta["thresholds"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: incomplete model ({exc!r})") from None
        if scaler.center_ is None or scaler.center_.shape != (len(names),):
            raise ModelError(f"{where}: scaler has the wrong number of columns")
        ref = getattr(est, "reference_", None)
        if ref is not None and ref.shape[1] != len(names):
            raise ModelError(f"{where}: reference rows have the wrong number of columns")
        m = cls(
            est,
            target_fpr=float(meta["target_fpr"]),
            holdout_fraction=float(meta["holdout_fraction"]),
            seed=int(meta["seed"]),
        )
        m.scaler = scaler
        m.feature_names_, m.dtypes_ = names, types
        m.thresholds_ = thresholds
        m.rows_learnt_ = int(meta.get("rows_learnt", 0))
        return m
