"""Fixtures of the simulator tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Many small tensor operations: one intra-op thread keeps them fast and steady on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
