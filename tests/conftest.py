"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch is imported

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

torch.set_flush_denormal(True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real RefCOCO-family pieces (../shared/realdata); skips when absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real-data tests need {REALDATA} (absent in a plain clone of this repository)")
    return REALDATA


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory) -> Path:
    """The synthetic benchmark's ``tiny`` preset (seed 0), written once per test session."""
    from semires.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "tiny", preset="tiny", seed=0)


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models gain nothing from threads, and spinning threads are slow on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
