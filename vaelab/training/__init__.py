"""Training: the state, the SPMD step, the loop, checkpoints, populations and sweeps.

The notebook API's `vaelab.train(...)` (vaelab/api.py) is the function that runs them."""
