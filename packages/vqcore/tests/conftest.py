"""vqcore tests: without CUDA, Triton kernels run in Triton's CPU interpreter.

``TRITON_INTERPRET`` is read when ``triton`` is first imported, so it is set here, before any test module is collected
(a test module that imported triton before ``test_vqcore_kernels.py`` set it would otherwise leave every kernel test
without a backend). On a GPU machine nothing is set and the kernels compile for the device.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
