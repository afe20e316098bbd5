"""Fixtures shared by the test suite."""
from pathlib import Path

import pytest

REAL = ("mnist", "fashion-mnist")


def real_datasets_root():
    """A folder holding <folder>/mnist and <folder>/fashion-mnist, found as the product finds
    data ($FASTLENET_DATA, the user cache, /usr/share/datasets); (folder or None, the places searched)."""
    from fastlenet import data
    searched = data.search_dirs("mnist")
    for folder in searched:
        if all(data._files_in(folder / name, "") for name in REAL):
            return folder, searched
    return None, searched


@pytest.fixture(scope="session")
def real_data():
    path, searched = real_datasets_root()
    if path is None:
        pytest.skip("needs the real MNIST and Fashion-MNIST IDX files as <folder>/mnist and "
                    f"<folder>/fashion-mnist in one of: {', '.join(map(str, searched))} "
                    "(set FASTLENET_DATA=<folder>, or let fastlenet download them once)")
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
