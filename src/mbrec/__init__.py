"""mbrec: multi-behavior recommendation (COPF, MBSSL and baselines) under one protocol."""

from mbrec.train.allocator import request_huge_pages as _request_huge_pages

__version__ = "0.1.0"

_request_huge_pages()   # before torch's first allocation: PyTorch reads THP_MEM_ALLOC_ENABLE once
