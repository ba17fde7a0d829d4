"""explainer: a main CNN, a mirror CNN that explains it from its hidden activations, and a verdict on the pair."""

from explainer.inputs.imagecheck import ImageError, check_image
from explainer.pair.bundle import BundleError, load_bundle, save_bundle
from explainer.pair.models import MirrorPair, build_pair
from explainer.verdict.predictor import Explainer, Explanation

__all__ = [
    "BundleError",
    "Explainer",
    "Explanation",
    "ImageError",
    "MirrorPair",
    "build_pair",
    "check_image",
    "load_bundle",
    "save_bundle",
]
__version__ = "0.1.0"
