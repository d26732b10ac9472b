"""Benchmarks of pyseg_noise ops against eager PyTorch and torch.compile (installed as pyseg_noise.benchmarks)."""
