"""rbm_core: Restricted Boltzmann Machines for collaborative filtering.

:class:`RBMRecommender` is the served model: a blended rating model (user-based
:class:`SoftmaxRBM`, item-based :class:`ItemSoftmaxRBM`, the bias baseline) and a
ranker (:class:`RBMRanker`). Also a Bernoulli-visible RBM (:class:`BernoulliRBM`) for
binary or [0, 1]-valued data. Pure numerical code (numpy, scipy, pandas): no web
framework and no database.
"""

from rbm_core.artifact import (
    FORMAT_VERSION,
    ArtifactError,
    load_model,
    read_artifact_metadata,
    save_model,
    verify_artifact,
)
from rbm_core.base import (
    ItemScores,
    NotFittedError,
    Prediction,
    Recommendation,
    UnknownItemError,
)
from rbm_core.bernoulli import BernoulliRBM
from rbm_core.data import RatingDataError, RatingMatrix, UserRatings
from rbm_core.item_rbm import ItemSoftmaxRBM
from rbm_core.model import SoftmaxRBM
from rbm_core.ranker import RBMRanker
from rbm_core.recommender import RBMRecommender
from rbm_core.scale import DEFAULT_SCALE, RatingScale, RatingScaleError
from rbm_core.softmax_inference import DTYPE
from rbm_core.training import TrainingDivergedError

__all__ = [
    "DEFAULT_SCALE",
    "DTYPE",
    "FORMAT_VERSION",
    "ArtifactError",
    "BernoulliRBM",
    "ItemScores",
    "ItemSoftmaxRBM",
    "NotFittedError",
    "Prediction",
    "RBMRanker",
    "RBMRecommender",
    "RatingDataError",
    "RatingMatrix",
    "RatingScale",
    "RatingScaleError",
    "Recommendation",
    "SoftmaxRBM",
    "TrainingDivergedError",
    "UnknownItemError",
    "UserRatings",
    "load_model",
    "read_artifact_metadata",
    "save_model",
    "verify_artifact",
]
