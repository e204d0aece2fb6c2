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


def _cpp_levels():
    """The SIMD levels the loaded cpp module can run: scalar up to the one it was compiled for."""
    try:
        from pydl import _cpp
    except ImportError:
        return []
    order = ("scalar", "avx2", "avx512")
    return list(order[: order.index(_cpp.compiled_simd()) + 1])


@pytest.fixture(params=_cpp_levels())
def simd_level(request):
    """Runs the test at each SIMD level of the cpp module (``_cpp.set_simd_level``), restoring it after."""
    from pydl import _cpp

    before = _cpp.simd_level()
    _cpp.set_simd_level(request.param)
    yield request.param
    _cpp.set_simd_level(before)
