"""``pydl.data``: data sets, loaders, splits and transforms for training on pydl.

- :class:`Dataset`, :class:`TensorDataset`, :class:`Subset`, :func:`random_split`;
- :class:`DataLoader`: batches as ``pydl.Tensor`` s, shuffled per epoch from a seed;
- :func:`stratified_split`, :func:`train_test_split`, :func:`stratified_kfold`
  (scikit-learn's ``model_selection`` underneath);
- ``pydl.data.transforms``: ``Compose``, ``Normalize``, ``RandomCrop``,
  ``RandomHorizontalFlip``, ``GaussianNoise``, ``ToFloat`` on NumPy batches;
- the data sets, read from files installed with packages, never downloaded:
  :func:`mnist5k`, :func:`fashion_mnist`, :func:`digits8x8`, :func:`read_idx`,
  and :func:`load` by name.
"""
from . import transforms
from .dataset import Dataset, Subset, TensorDataset, random_split
from .datasets import (FASHION_MNIST_DIR, Split, digits8x8, fashion_mnist, load, mnist5k, mnist5k_split, names,
                       read_idx)
from .errors import DataError
from .loader import DataLoader, default_collate
from .split import stratified_kfold, stratified_split, train_test_split

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "DataLoader", "default_collate",
           "stratified_split", "train_test_split", "stratified_kfold", "transforms", "DataError", "read_idx",
           "mnist5k", "mnist5k_split", "fashion_mnist", "digits8x8", "load", "names", "Split",
           "FASHION_MNIST_DIR"]
