"""The compiled training program: activations, model, optimizers, the step, in-jit statistics,
evaluation, the run loop, memory preflight, devices and latency. The only layer that imports jax."""
