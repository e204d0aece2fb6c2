"""Fixtures shared by the family tests."""
import pytest

import pydl


@pytest.fixture(params=[1, 2])
def threads(request):
    """Runs the test at 1 and at 2 kernel threads, restoring the setting after."""
    before = pydl.get_num_threads()
    pydl.set_num_threads(request.param)
    yield request.param
    pydl.set_num_threads(before)
