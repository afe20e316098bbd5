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


def write_synthetic_idx(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Ten easy classes as IDX files: a bright 6x6 square at a class-specific
    spot on a noisy 28x28 image.  Returns the folder (for --dataset idx)."""
    import numpy as np
    from fastlenet import data

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 70, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 5)
            x[i, 4 + 12 * r: 10 + 12 * r, 1 + 5 * q: 7 + 5 * q] = 250
        data.write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        data.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture(scope="session")
def synthetic_idx(tmp_path_factory):
    return write_synthetic_idx(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def swap_backend_module(monkeypatch):
    """Point a backend name at another module and forget what the registry has loaded,
    so the next kernels.available() imports afresh (restored after the test)."""
    from fastlenet import kernels

    def swap(name, module):
        monkeypatch.setitem(kernels._MODULES, name, module)
        monkeypatch.setattr(kernels, "_loaded", {})
        monkeypatch.setattr(kernels, "_errors", {})
    return swap
