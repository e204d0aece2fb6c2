# pool family (pydl._cython): max_pool2d, avg_pool2d, adaptive_avg_pool2d forward and backward. Included by _cython.pyx.
