"""Test setup: 8 fake CPU devices (set before JAX is imported) and fast compilation."""

import os

# The 8 fake devices are threads on (in CI) 2 cores: under load one device can reach a collective
# long after the others, and XLA's CPU runtime aborts a rendezvous after 40 s by default.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=1200"
                           " --xla_cpu_collective_timeout_seconds=1200").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)
