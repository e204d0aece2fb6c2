# conv family (pydl._cython): im2col, col2im, conv2d forward and backward. Included by _cython.pyx.
