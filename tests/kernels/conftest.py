"""Without a GPU, run Triton kernels through its interpreter. Triton picks compiled or interpreted
when a kernel is DEFINED, so kernel modules imported earlier in this session (the runtime imports
some at module level) are dropped here and re-imported in interpreter mode by the tests."""
import os
import sys

import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    os.environ["TRITON_INTERPRET"] = "1"
    for _name in [n for n in sys.modules
                  if n.startswith("sgl_lang.kernels.") or n == "sgl_lang.runtime.layers.triton_attention"]:
        del sys.modules[_name]
