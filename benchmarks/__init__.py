"""jaxvis's benchmarks: scripts that time the optimiser and write JSON, and the small modules they
share. Run them from the checkout's root as modules (``python -m benchmarks.bench_sweep``).

- :mod:`benchmarks.machine`     the machine: CPU, accelerator and memory, versions, other load,
  the matmul peak at each precision;
- :mod:`benchmarks.flops`       useful FLOPs of a unit-step, XLA's count as a cross-check;
- :mod:`benchmarks.variants`    a layer set up as ``jaxvis sweep`` plans it, the ways of running
  it, round-robin timing;
- :mod:`benchmarks.torch_twin`  the same algorithm in PyTorch eager: a peer and a test oracle;
- :mod:`benchmarks.tables`      rates, markdown tables, the JSON files;
- scripts: :mod:`benchmarks.bench_sweep`, :mod:`benchmarks.bench_scaling`,
  :mod:`benchmarks.profile_step`, :mod:`benchmarks.device_run` (every GPU figure in one call).
"""
