"""Stage `causal` at real scale: Wan2.1-T2V-1.3B adapted to block-causal generation (TPU / GPU).

  launch/tpu_vm.sh TPU_NAME ZONE train --config configs/wan_1_3b_causal.py \
      --workdir /mnt/bucket/runs/causal --config.data.data_dir=/data/wan_latents \
      --config.train.init_from=/ckpt/wan_1_3b        # (launch/gpu_multinode.sh on GPU hosts)

Data: a `latent_folder` (blockvid_jax/data/latent_folder.py): Wan VAE latents (480x832 -> 60x104,
21 latent frames = 81 video frames per 7 chunks of 3) and per-chunk umT5-XXL caption embeddings
[512, 4096]. Params start from a converted Wan2.1 checkpoint (`python -m blockvid_jax.convert`).
Parallelism: FSDP over all devices x 2-way tensor parallelism, bf16 matmuls (params and optimizer
state stay float32), full remat of every block (only its input kept). Not for CPU.
"""

from blockvid_jax.config_lib import base_config
from blockvid_jax.training.config import add_train_defaults


def get_config(arg: str = ""):
  del arg
  c = add_train_defaults(base_config())
  c.model.preset = "wan_1_3b"             # D 1536, 30 layers, 12 heads, text_dim 4096
  c.model.frames_per_chunk = 3            # latent frames per chunk (Self Forcing / LongLive)
  c.model.dtype = "bfloat16"              # matmul compute dtype
  c.model.remat_policy = "full"           # keep only each block's input: the teacher-forcing
                                          # window is 65,520 tokens (benchmarks/memory_plan.py:
                                          # 73 GB per device; dots_no_batch 138 GB)
  c.model.attention_impl = "auto"         # cuDNN flash on GPU, chunked (flash algorithm) elsewhere
  c.text.encoder = "umt5"                 # embeddings come pre-encoded with the latents
  c.text.max_len = 512
  c.autoencoder.kind = "wan"              # Wan2.1 VAE (x4 in time, x8 in space)
  c.video.latent_height = 60              # 480 pixels / 8
  c.video.latent_width = 104              # 832 pixels / 8
  c.video.fps = 16
  c.cache.k_salient = 1560                # of 4680 tokens per chunk (3 x 30 x 52)

  c.mesh.data = 1
  c.mesh.fsdp = -1                        # parameters, grads and Adam moments sharded over all
  c.mesh.tensor = 2                       # heads / MLP split in 2

  c.data.kind = "latents"
  c.data.data_dir = "/data/wan_latents"   # a latent_folder; override with --config.data.data_dir
  c.data.window_chunks = 7                # 21 latent frames per window
  c.data.frames_per_chunk = 3             # one caption embedding per model chunk
  c.data.num_threads = 8
  c.data.prefetch = 4

  c.train.stage = "causal"
  c.train.init_from = ""                  # the converted Wan2.1-T2V-1.3B params directory
  c.train.total_steps = 20_000
  c.train.batch_size = 64                 # global windows per step
  c.train.learning_rate = 2e-5            # adaptation of a pretrained model
  c.train.warmup_steps = 500
  c.train.min_lr_ratio = 0.1
  c.train.weight_decay = 0.01
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.999
  c.train.text_dropout = 0.1              # null prompt for classifier-free guidance
  c.train.layout = "teacher_forcing"      # noisy chunks see clean earlier chunks (as sampled)
  c.train.context_view = "cache"          # ... only those the cache would hold (cache.mode)
  c.train.noise.kind = "cosine"           # the paper's best chunk-wise ramp, on the noisy half
  c.train.noise.t_min_max = 0.2
  c.train.noise.t_max = 1.0
  c.train.noise.t_max_range = 0.3         # t_max ~ U(0.7, 1): no chunk always pure noise
  c.train.noise.shift = 5.0               # Wan's flow shift at 480p
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 0                # latents only: sample with python -m blockvid_jax.sample
  c.sample.solver = "euler"
  c.sample.num_steps = 50
  c.sample.guidance = 5.0
  return c
