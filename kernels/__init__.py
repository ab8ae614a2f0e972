"""Fused ops for GRAM's recursion: Triton kernels on CUDA, torch references elsewhere. Needs torch only
(and triton where present)."""
