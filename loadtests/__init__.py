"""Open-loop load generation, batching-mode sweeps and quality-per-compute studies."""
