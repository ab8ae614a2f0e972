"""The fast ways to run GRAM.step (model/fast_path/README.md): the engine's runner, the CPU paths, CUDA
graphs, and the scripts that check and measure them. Built on kernels.ops (below) and model.gram; the
service (above) calls runner.make_runner only."""
