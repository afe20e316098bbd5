"""Fixtures shared by the test suite."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_datasets():
    """The real IDX files beside the project (FASTLENET_DATA or ../shared/datasets), or None."""
    for candidate in (os.environ.get("FASTLENET_DATA"), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def real_data():
    path = shared_datasets()
    if path is None:
        pytest.skip("the real MNIST/Fashion-MNIST files are not here (set FASTLENET_DATA or put them in ../shared/datasets)")
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty user cache and no FASTLENET_DATA / system folders, so nothing real is found."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTLENET_DATA", raising=False)
    from fastlenet import data
    monkeypatch.setattr(data, "SYSTEM_DIRS", [tmp_path / "system"])
    return tmp_path / "cache" / "fastlenet"
