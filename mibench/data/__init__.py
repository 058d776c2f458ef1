"""Datasets: in-memory image sets and the registered loaders that build them."""

from mibench.data.base import DataBundle, Dataset, ImageSet, iterate_batches, resize_images, to_float

__all__ = ["DataBundle", "Dataset", "ImageSet", "iterate_batches", "resize_images", "to_float"]
