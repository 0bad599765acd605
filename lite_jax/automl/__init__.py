"""Hardware-aware design automation: HAQ (mixed-precision quantization), AMC (channel pruning)
and ProxylessNAS, over their shared pieces: the DDPG agent, image classifiers, and hardware cost
models with device latency tables. Fake-quantization layers live in `lite_jax.nn`."""
