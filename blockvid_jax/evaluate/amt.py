"""AMT-S frame interpolation in Flax (LV-Bench Motion, VBench motion smoothness).

The architecture of AMT-S as VBench ships it (`vbench/third_party/amt/networks/AMT-S.py` and its
`blocks/`; facts read from that public code, written anew here), at time embt = 0.5, eval mode,
scale factor 1:

  img0, img1 [B, H, W, 3] in [0, 1] (H, W multiples of 16); m = mean of both images (per pair);
  x0, x1 = img - m.
  * feature encoder (RAFT SmallEncoder, instance norm without affine, eps 1e-5): conv 7x7/2
    (3 -> 32), IN, ReLU; 3 layers of 2 bottlenecks (32, 64/2, 96/2; 1x1 -> 3x3(/stride) -> 1x1
    with IN + ReLU after each, a 1x1/stride conv + IN shortcut when strided, ReLU after the sum);
    conv 1x1 -> 84.
    fmap0, fmap1 [B, H/8, W/8, 84].
  * bidirectional correlation: corr[p, q] = <fmap0[p], fmap1[q]> / sqrt(84), a pyramid of 4 levels
    (2x2 average pooling over q; the transpose pools over p); a lookup at coords (x, y) samples
    a 7x7 window (radius 3) per level with bilinear, zero padding, align_corners=True. RAFT's window
    quirk is kept: window entry (a, b) samples at (x + a - 3, y + b - 3) (a is the slow index).
  * context pyramid (per image): 4 stages of [conv 3x3/2 + PReLU, conv 3x3 + PReLU] with
    channels 20, 32, 44, 56.
  * decoders from 1/16 to full resolution, each [conv+PReLU, ResBlock(side 20), ConvTranspose 4x4/2
    pad 1]; an intermediate decoder warps both images' features with the current flows (bilinear,
    border padding, align_corners=True) and adds 2 * bilinear-upsampled flows; the last one predicts
    3 flow pairs, 3 sigmoid masks and 3 RGB residuals.
  * after decoders 4, 3, 2 an update block (RAFT SmallUpdateBlock, LeakyReLU 0.1) reads the
    correlation at coord + flow1 / embt and coord + flow0 / (1 - embt) (flows first downsampled to
    1/8 by bilinear resize times the factor) and adds residuals to flows and features.
  * output: per flow k, mask_k * warp(img0 - m, f0_k) + (1 - mask_k) * warp(img1 - m, f1_k) + m +
    res_k; the mean over k plus a conv-PReLU-conv of the 3 predictions; clamped to [0, 1].

Module names are the PyTorch key prefixes (e.g. "encoder.pyramid1.0.0"), so the converter is a
mechanical per-key map. Shape letters: B pairs, H/W rows/cols, C channels, P points.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from blockvid_jax.evaluate.resize import resize_matrix
from blockvid_jax.typing import Array

EMBT = 0.5          # VBench interpolates the midpoint
CONV_TRANSPOSE = ("decoder4.convblock.2", "decoder3.convblock.2", "decoder2.convblock.2",
                  "decoder1.convblock.2")   # PyTorch ConvTranspose2d (kernel flipped on import)


@dataclasses.dataclass(frozen=True)
class AmtSpec:
  """AMT-S sizes (`networks.AMT-S.Model` defaults; VBench's cfg: radius 3, 4 levels, 3 flows)."""
  corr_radius: int = 3
  corr_levels: int = 4
  num_flows: int = 3
  channels: tuple[int, ...] = (20, 32, 44, 56)
  skip_channels: int = 20
  feat_dim: int = 84


# ----------------------------------------------------------------------------- sampling helpers


def bilinear_sample(img: Array, x: Array, y: Array, border: bool) -> Array:
  """img [B, H, W, C] at pixel coords x, y [B, P] -> [B, P, C] (grid_sample, align_corners=True).

  border=True clamps the coordinates into the image first ('border'); otherwise taps outside the
  image count as zero ('zeros').
  """
  b, h, w, c = img.shape
  if border:
    x, y = jnp.clip(x, 0.0, w - 1.0), jnp.clip(y, 0.0, h - 1.0)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  flat = img.reshape(b, h * w, c)                                    # [B, H*W, C]
  out = 0.0
  for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
    xi, yi = x0 + dx, y0 + dy
    wgt = (1.0 - jnp.abs(x - xi)) * (1.0 - jnp.abs(y - yi))          # [B, P]
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    idx = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
    val = jnp.take_along_axis(flat, idx[..., None], axis=1)          # [B, P, C]
    out = out + jnp.where(inside, wgt, 0.0)[..., None] * val
  return out


def warp(img: Array, flow: Array) -> Array:
  """Backward warp img [B, H, W, C] by flow [B, H, W, 2] (x, y), bilinear, border padding."""
  b, h, w, c = img.shape
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=img.dtype), jnp.arange(w, dtype=img.dtype),
                        indexing="ij")                               # [H, W] each
  x = (gx[None] + flow[..., 0]).reshape(b, h * w)
  y = (gy[None] + flow[..., 1]).reshape(b, h * w)
  return bilinear_sample(img, x, y, border=True).reshape(b, h, w, c)


def resize(x: Array, factor: float) -> Array:
  """F.interpolate(scale_factor=factor, bilinear, align_corners=False) of [B, H, W, C]."""
  _, h, w, _ = x.shape
  mh = resize_matrix(h, int(np.floor(h * factor)), "bilinear", scale=factor)
  mw = resize_matrix(w, int(np.floor(w * factor)), "bilinear", scale=factor)
  x = jnp.einsum("oh,bhwc->bowc", jnp.asarray(mh, x.dtype), x)       # [B, h', W, C]
  return jnp.einsum("pw,bowc->bopc", jnp.asarray(mw, x.dtype), x)    # [B, h', w', C]


def instance_norm(x: Array, eps: float = 1e-5) -> Array:
  """InstanceNorm2d without affine parameters: per image and channel over H, W."""
  mu = jnp.mean(x, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mu), axis=(1, 2), keepdims=True)
  return (x - mu) * jax.lax.rsqrt(var + eps)


def corr_pyramid(f0: Array, f1: Array, levels: int) -> list[Array]:
  """fmaps [B, h, w, D] -> per level [B*h*w, h_l, w_l, 1]: <f0[p], f1[q]> / sqrt(D), q pooled."""
  b, h, w, d = f0.shape
  corr = jnp.einsum("bpd,bqd->bpq", f0.reshape(b, h * w, d), f1.reshape(b, h * w, d))
  corr = (corr / jnp.sqrt(jnp.float32(d))).reshape(b * h * w, h, w, 1)  # [B*h*w, h, w, 1]
  out = [corr]
  for _ in range(levels - 1):
    n, ch, cw, _ = corr.shape
    corr = corr[:, :ch // 2 * 2, :cw // 2 * 2]
    corr = corr.reshape(n, ch // 2, 2, cw // 2, 2, 1).mean(axis=(2, 4))   # 2x2 average pool
    out.append(corr)
  return out


def corr_lookup(pyramid: list[Array], coords: Array, radius: int) -> Array:
  """coords [B, h, w, 2] (x, y at level 0) -> [B, h, w, levels * (2r+1)^2] window samples."""
  b, h, w, _ = coords.shape
  k = 2 * radius + 1
  d = jnp.arange(-radius, radius + 1, dtype=coords.dtype)
  da, db = jnp.meshgrid(d, d, indexing="ij")                         # [k, k]: (a, b) offsets
  outs = []
  for lvl, corr in enumerate(pyramid):
    c = coords.reshape(b * h * w, 1, 2) / (2 ** lvl)                  # [N, 1, 2]
    x = c[..., 0] + da.reshape(1, k * k)                              # [N, k*k] x + (a - r)
    y = c[..., 1] + db.reshape(1, k * k)                              # [N, k*k] y + (b - r)
    outs.append(bilinear_sample(corr, x, y, border=False)[..., 0].reshape(b, h, w, k * k))
  return jnp.concatenate(outs, axis=-1)                              # [B, h, w, L*k*k]


# ----------------------------------------------------------------------------- the network


class AmtS(nn.Module):
  """(img0, img1) [B, H, W, 3] in [0, 1], H, W multiples of 16 -> midpoint [B, H, W, 3], [0, 1]."""
  spec: AmtSpec = AmtSpec()

  def conv(self, name, x, features, k, stride=1, pad=None, dilate=1):
    pad = (k - 1) // 2 if pad is None else pad
    return nn.Conv(features, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   input_dilation=(dilate, dilate), name=name)(x)

  def prelu(self, name, x):
    a = self.param(name, nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, a * x)

  def convrelu(self, name, x, features, k=3, stride=1):
    return self.prelu(name + ".1", self.conv(name + ".0", x, features, k, stride))

  def resblock(self, name, x, side):
    c = x.shape[-1]
    out = self.convrelu(name + ".conv1", x, c)
    side_feat = self.convrelu(name + ".conv2", out[..., c - side:], side)
    out = self.convrelu(name + ".conv3", jnp.concatenate([out[..., :c - side], side_feat], -1), c)
    side_feat = self.convrelu(name + ".conv4", out[..., c - side:], side)
    out = self.conv(name + ".conv5", jnp.concatenate([out[..., :c - side], side_feat], -1), c, 3)
    return self.prelu(name + ".prelu", x + out)

  def decoder(self, name, x, width, out_features):
    """convrelu(-> width) -> ResBlock -> ConvTranspose 4x4/2 pad 1 (as a 2x-dilated conv, pad 2)."""
    x = self.convrelu(name + ".convblock.0", x, width)
    x = self.resblock(name + ".convblock.1", x, self.spec.skip_channels)
    return self.conv(name + ".convblock.2", x, out_features, 4, pad=2, dilate=2)

  def bottleneck(self, name, x, planes, stride):
    y = nn.relu(instance_norm(self.conv(name + ".conv1", x, planes // 4, 1)))
    y = nn.relu(instance_norm(self.conv(name + ".conv2", y, planes // 4, 3, stride)))
    y = nn.relu(instance_norm(self.conv(name + ".conv3", y, planes, 1)))
    if stride != 1:
      x = instance_norm(self.conv(name + ".downsample.0", x, planes, 1, stride))
    return nn.relu(x + y)

  def feat_encoder(self, x):                             # [2B, H, W, 3] -> [2B, H/8, W/8, 84]
    x = nn.relu(instance_norm(self.conv("feat_encoder.conv1", x, 32, 7, 2)))
    for i, (planes, stride) in enumerate(((32, 1), (64, 2), (96, 2)), 1):
      x = self.bottleneck(f"feat_encoder.layer{i}.0", x, planes, stride)
      x = self.bottleneck(f"feat_encoder.layer{i}.1", x, planes, 1)
    return self.conv("feat_encoder.conv2", x, self.spec.feat_dim, 1)

  def context(self, x):                                             # 4 feature maps, /2 .. /16
    fs = []
    for i, ch in enumerate(self.spec.channels, 1):
      x = self.convrelu(f"encoder.pyramid{i}.0", x, ch, 3, 2)
      x = self.convrelu(f"encoder.pyramid{i}.1", x, ch)
      fs.append(x)
    return fs

  def update(self, name, net, flow, corr, scale):
    """RAFT SmallUpdateBlock: (feature, flows [.., 4], corr) -> (delta feature, delta flows)."""
    lrelu = lambda v: nn.leaky_relu(v, 0.1)
    cdim = net.shape[-1]
    if scale is not None:
      net = resize(net, 1.0 / scale)
    cor = lrelu(self.conv(name + ".convc1", corr, 64, 1))
    flo = lrelu(self.conv(name + ".convf1", flow, 40, 7))
    flo = lrelu(self.conv(name + ".convf2", flo, 20, 3))
    inp = lrelu(self.conv(name + ".conv", jnp.concatenate([cor, flo], -1), 68, 3))
    inp = jnp.concatenate([inp, flow, net], -1)
    out = self.conv(name + ".gru.2", lrelu(self.conv(name + ".gru.0", inp, 76, 3)), 76, 3)
    d_net = self.conv(name + ".feat_head.2", lrelu(self.conv(name + ".feat_head.0", out, 76, 3)),
                      cdim, 3)
    d_flow = self.conv(name + ".flow_head.2", lrelu(self.conv(name + ".flow_head.0", out, 76, 3)),
                       4, 3)
    if scale is not None:
      d_net, d_flow = resize(d_net, scale), scale * resize(d_flow, scale)
    return d_net, d_flow

  @nn.compact
  def __call__(self, img0: Array, img1: Array) -> Array:
    s = self.spec
    b, h, w, _ = img0.shape
    both = jnp.concatenate([img0, img1], axis=1)                     # [B, 2H, W, 3]
    mean = jnp.mean(both, axis=(1, 2, 3), keepdims=True)             # [B, 1, 1, 1]
    x0, x1 = img0 - mean, img1 - mean
    fmaps = self.feat_encoder(jnp.concatenate([x0, x1], axis=0))     # [2B, h/8, w/8, 84]
    pyramid = corr_pyramid(fmaps[:b], fmaps[b:], s.corr_levels)
    gy, gx = jnp.meshgrid(jnp.arange(h // 8, dtype=x0.dtype), jnp.arange(w // 8, dtype=x0.dtype),
                          indexing="ij")
    coord = jnp.stack([gx, gy], axis=-1)[None]                        # [1, h/8, w/8, 2] (x, y)
    fs = self.context(jnp.concatenate([x0, x1], axis=0))             # shared weights, [2B, ...]
    f0, f1 = [f[:b] for f in fs], [f[b:] for f in fs]

    def lookup(flow0, flow1, down):                                  # flows at 1/(8/down)
      if down != 1:
        flow0, flow1 = resize(flow0, 1.0 / down) / down, resize(flow1, 1.0 / down) / down
      corr = jnp.concatenate([corr_lookup(pyramid, coord + flow1 / EMBT, s.corr_radius),
                              corr_lookup(pyramid_t, coord + flow0 / (1.0 - EMBT), s.corr_radius)],
                             axis=-1)
      return corr, jnp.concatenate([flow0, flow1], axis=-1)

    pyramid_t = corr_pyramid(fmaps[b:], fmaps[:b], s.corr_levels)    # transposed volume
    c = s.channels
    embt = jnp.full(f0[3].shape[:3] + (1,), EMBT, x0.dtype)
    out = self.decoder("decoder4", jnp.concatenate([f0[3], f1[3], embt], -1), 2 * c[3], c[2] + 4)
    fl0, fl1, ft = out[..., 0:2], out[..., 2:4], out[..., 4:]        # 1/8
    for lvl, (name, upd, down, scale) in enumerate((("decoder3", "update4", 1, None),
                                                    ("decoder2", "update3", 2, 2),
                                                    (None, "update2", 4, 4))):
      corr, flow = lookup(fl0, fl1, down)
      d_ft, d_flow = self.update(upd, ft, flow, corr, scale)
      fl0, fl1, ft = fl0 + d_flow[..., 0:2], fl1 + d_flow[..., 2:4], ft + d_ft
      if name is None:
        break
      i = 2 - lvl                                                    # context level of the decoder
      inp = jnp.concatenate([ft, warp(f0[i], fl0), warp(f1[i], fl1), fl0, fl1], -1)
      out = self.decoder(name, inp, 3 * c[i], c[i - 1] + 4)
      fl0 = out[..., 0:2] + 2.0 * resize(fl0, 2.0)
      fl1 = out[..., 2:4] + 2.0 * resize(fl1, 2.0)
      ft = out[..., 4:]
    n = s.num_flows
    inp = jnp.concatenate([ft, warp(f0[0], fl0), warp(f1[0], fl1), fl0, fl1], -1)
    out = self.decoder("decoder1", inp, 3 * c[0], 8 * n)             # [B, H, W, 8n]
    up0, up1 = 2.0 * resize(fl0, 2.0), 2.0 * resize(fl1, 2.0)
    flows0 = out[..., :2 * n] + jnp.tile(up0, (1, 1, 1, n))          # [B, H, W, 2n]
    flows1 = out[..., 2 * n:4 * n] + jnp.tile(up1, (1, 1, 1, n))
    mask = jax.nn.sigmoid(out[..., 4 * n:5 * n])                     # [B, H, W, n]
    res = out[..., 5 * n:]                                           # [B, H, W, 3n]
    preds = [mask[..., k:k + 1] * warp(x0, flows0[..., 2 * k:2 * k + 2])
             + (1.0 - mask[..., k:k + 1]) * warp(x1, flows1[..., 2 * k:2 * k + 2])
             + mean + res[..., 3 * k:3 * k + 3] for k in range(n)]   # n x [B, H, W, 3]
    stack = jnp.concatenate(preds, axis=-1)                           # [B, H, W, 3n] flow-major
    comb = self.prelu("comb_block.1", self.conv("comb_block.0", stack, 6 * n, 3))
    comb = self.conv("comb_block.2", comb, 3, 3)
    return jnp.clip(sum(preds) / n + comb, 0.0, 1.0)
