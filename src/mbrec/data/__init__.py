"""Data layer: the dataset type, loaders, synthetic data and samplers."""

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.errors import DataError

__all__ = ["DataError", "MultiBehaviorDataset", "binary_csr"]
