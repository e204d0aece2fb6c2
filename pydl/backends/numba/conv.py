"""numba adapters for the conv family: im2col, col2im, conv2d forward and backward."""
