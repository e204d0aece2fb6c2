"""numba adapters for the pool family: max_pool2d, avg_pool2d, adaptive_avg_pool2d forward and backward."""
