import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # program_suite


@pytest.fixture(scope="session")
def local_runtime():
    """sgl.Runtime() on the real default model, as a user starts it."""
    import sgl_lang as sgl
    rt = sgl.Runtime()
    yield rt
    rt.shutdown()
