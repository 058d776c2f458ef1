"""Classifier architectures: the `Classifier` interface and the registered networks."""

from mibench.models.base import Classifier, ClassifierOutput, build_classifier, freeze

__all__ = ["Classifier", "ClassifierOutput", "build_classifier", "freeze"]
