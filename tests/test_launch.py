"""Launch scripts, dry-run (DRY_RUN=1 prints the commands): TPU VM creation / copy / setup / the run
on every worker; GPU hosts' distributed environment; bad usage exits 2 with one line."""

import os
import pathlib
import shlex
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _launch(script, *args, **env):
  full = {k: v for k, v in os.environ.items()
          if k not in ("CREATE", "COPY", "SETUP", "COORDINATOR", "SPOT")}
  full.update(DRY_RUN="1", **env)
  return subprocess.run(["bash", str(ROOT / "launch" / script), *args], env=full,
                        capture_output=True, text=True, timeout=60, check=False)


def _commands(out):
  lines = [ln for ln in out.splitlines() if ln.startswith("+ ")]
  return [shlex.split(ln[2:]) for ln in lines]


def test_tpu_vm_dry_run_creates_copies_sets_up_and_runs_on_every_worker():
  jax_pin = next(ln.split("==")[1] for ln in (ROOT / "requirements.txt").read_text().splitlines()
                 if ln.startswith("jax=="))
  r = _launch("tpu_vm.sh", "my-tpu", "us-east5-a", "train", "--config", "configs/wan_1_3b_causal.py",
              "--workdir", "gs://bucket/run 1", CREATE="v5p-16", SPOT="1", COPY="1", SETUP="1")
  assert r.returncode == 0, r.stderr
  create, copy, ssh = _commands(r.stdout)
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "my-tpu"
  assert create[create.index("--accelerator-type") + 1] == "v5p-16" and "--spot" in create
  assert create[create.index("--zone") + 1] == "us-east5-a"
  assert copy[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in copy
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--worker=all" in ssh
  remote = ssh[ssh.index("--command") + 1]
  assert f"'jax[tpu]=={jax_pin}'" in remote and "pip install -q -r requirements.txt" in remote
  run = remote.split("&&")[-1].strip()
  assert shlex.split(run) == ["BLOCKVID_DISTRIBUTED=1", "python3", "-m", "blockvid_jax.train",
                              "--config", "configs/wan_1_3b_causal.py", "--workdir",
                              "gs://bucket/run 1"]


def test_tpu_vm_dry_run_without_options_only_runs():
  r = _launch("tpu_vm.sh", "t", "z", "sample", "--config", "configs/dit.py:wan_1_3b")
  assert r.returncode == 0, r.stderr
  (ssh,) = _commands(r.stdout)
  assert ssh[4] == "ssh" and "pip" not in ssh[-1]


def test_gpu_multinode_dry_run_exports_the_distributed_environment():
  r = _launch("gpu_multinode.sh", "train", "--config", "c.py", "--workdir", "/shared/run",
              COORDINATOR="host0:1234", NUM_PROCESSES="2", PROCESS_ID="1")
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  for needle in ("+ export BLOCKVID_DISTRIBUTED=1", "+ export JAX_COORDINATOR_ADDRESS=host0:1234",
                 "+ export JAX_NUM_PROCESSES=2", "+ export JAX_PROCESS_ID=1"):
    assert needle in lines, r.stdout
  assert lines[-1] == "+ python3 -m blockvid_jax.train --config c.py --workdir /shared/run"


def test_bad_usage_is_one_line_exit_2():
  for script, args, env, needle in (
      ("tpu_vm.sh", ["t", "z", "fly"], {}, "unknown command fly"),
      ("tpu_vm.sh", ["t"], {}, "usage:"),
      ("gpu_multinode.sh", ["fly"], {}, "unknown command fly"),
      ("gpu_multinode.sh", ["train"], {"COORDINATOR": "h:1"}, "NUM_PROCESSES is required")):
    r = _launch(script, *args, **env)
    assert r.returncode != 0 and needle in r.stderr, (script, args, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
