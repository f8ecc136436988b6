"""Side-by-side benchmarks: plain PyTorch hooks vs nnsight_jupyter vs nnsight 0.8.1 (see README.md)."""
