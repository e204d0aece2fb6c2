"""The sanitizer harness (``make sanitize``) really runs the kernels under ASan and UBSan.

Under ``make sanitize`` (PYDL_EXPECT_SANITIZED=1) the loaded native module must be the sanitized
build and the ASan runtime must be in the process, or the run would check nothing. In every other
run the module must be an ordinary build: a sanitized module never reaches users.
"""
import ctypes
import os

from pydl import _cpp


def _asan_runtime_loaded() -> bool:
    try:
        ctypes.CDLL(None).__asan_report_present  # noqa: B018  (an ASan runtime entry point)
        return True
    except AttributeError:
        return False


def test_build_matches_the_harness():
    info = _cpp.build_info()
    if os.environ.get("PYDL_EXPECT_SANITIZED") == "1":
        assert "address" in info["sanitize"] and "undefined" in info["sanitize"], info
        assert "build/sanitize" in _cpp.__file__, _cpp.__file__
        assert _asan_runtime_loaded(), "ASan runtime not preloaded: nothing would be checked"
    else:
        assert info["sanitize"] == "", f"a sanitized module is loaded outside the harness: {info}"
        assert not _asan_runtime_loaded()
