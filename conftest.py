"""Test-session settings, applied before any test or notebook kernel starts.

The hub is never touched in tests (offline flags), budgets shrink under CI (RLHF_CI=1), and
notebooks inherit these variables because nbval starts their kernels from this process.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RLHF_CI", "1")  # notebooks read this to shrink live-training demos
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would make cell outputs vary
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RLHF_ADAPT_THREADS", "0")  # the same thread count in runs that tests compare bit for bit


def pytest_collection_modifyitems(config, items):
    """Every notebook cell nbval collects is `slow`: the fast tier (``-m "not slow"``) leaves the notebooks out."""
    import pytest

    for item in items:
        if str(getattr(item, "path", "")).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
