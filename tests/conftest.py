import os

import numpy as np
import pytest

# The generated-code cache of a test run must not touch the user's cache.
os.environ.setdefault("ODEHILD_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(20240301)


# The files that take longest from a cold cache run first, so that the two xdist workers (one file
# each at a time, --dist loadfile) finish together rather than one waiting on the last long file.
LONG_FILES = ["test_committee.py", "test_cache_cli.py", "test_structured.py", "test_multi_index.py",
              "test_sphere.py", "test_notebooks.py", "test_simulate.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
