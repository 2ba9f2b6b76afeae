import os

import numpy as np
import pytest

# The generated-code cache of a test run must not touch the user's cache.
os.environ.setdefault("ODEHILD_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(20240301)
