"""Benchmarks (issue #7): speed, memory and scaling of BSA-Net, side by side with PyTorch and the machine.

  python -m bsa_jax.bench                      # full run (~1.5 h on 2 quiet CPU cores)
  python -m bsa_jax.bench --plan=short         # same grid, 3 repeats, bf16/torch.compile at 128 only
  python -m bsa_jax.bench --quick              # smoke run of every section (~1.5 min)

Prints one Markdown document (also written to bench/RESULTS.md) and writes bench/results.json.
Sections: 1 throughput of our jitted train/predict steps (float32, bfloat16), compile time, peak RSS;
2 the PyTorch twin (`torch_bsanet.py`: eager, channels_last, torch.compile) and the ratios ours/torch;
3 achieved FLOP/s of the train step vs a measured matmul peak; 4 our metrics vs pysodmetrics (values
and time); 5 input pipeline vs the train step's consumption; 6 scaling over batch and image size, and
1 vs 8 simulated devices.

Modules: `plan` (what to measure), `_worker` (one measurement per fresh process), `jax_step`,
`torch_step`, `peak`, `metrics_bench`, `pipeline_bench` (the measurements), `sections` (results and
goals), `report` (Markdown), `common` (timing, subprocesses, machine facts).
"""
