"""rbm_core: a softmax-visible Restricted Boltzmann Machine for collaborative filtering."""

from rbm_core.scale import DEFAULT_SCALE, RatingScale, RatingScaleError

__all__ = ["DEFAULT_SCALE", "RatingScale", "RatingScaleError"]
