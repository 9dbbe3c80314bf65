"""Suite-wide test settings: hypothesis profiles and the `gpu` marker.

Profiles: `ci` (what `.ci/run` uses: deterministic, 200 examples, no deadline), `dev` (30 examples,
no deadline), `random` (ci's settings, not derandomized: the second pass of scripts/test) and `deep`
(1000 examples, not derandomized, for a long local run before a release: see CONTRIBUTING.md).
Choose one with HYPOTHESIS_PROFILE; without it, `ci` is used when CI is set, else `dev`.

Tests marked `gpu` are skipped unless torch is installed and sees a CUDA device.
"""

import os

import pytest
from hypothesis import is_hypothesis_test, settings

# Extends hypothesis's built-in "ci" profile (derandomize, no database, print_blob, no too_slow check).
settings.register_profile(
    "ci",
    parent=settings.get_profile("ci"),
    deadline=None,
    max_examples=200,
    derandomize=True,
    print_blob=True,
)
# The first call of a simulated collective can be slow (imports, caches), so no deadline here either.
# An explicit parent: hypothesis has already loaded its own "ci" profile on import when CI is set.
settings.register_profile("dev", parent=settings.get_profile("default"), max_examples=30, deadline=None)
# The second CI pass (scripts/test): the property tests once more with a fresh seed, which the
# derandomized "ci" profile never tries. The seed is printed first so a failure can be replayed.
settings.register_profile(
    "random", parent=settings.get_profile("ci"), derandomize=False, max_examples=30, print_blob=True
)
# A long local hunt: HYPOTHESIS_PROFILE=deep python -m pytest -m property (10x the ci profile's examples).
settings.register_profile("deep", parent=settings.get_profile("ci"), derandomize=False, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _cuda_available() -> bool:
    try:
        import torch  # lazy: most of the suite never needs torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # `-m property` selects every hypothesis test, for the random-seed pass
        if is_hypothesis_test(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.property)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch is missing or torch.cuda.is_available() is False")
    for item in gpu_items:
        item.add_marker(skip)
