"""VQ-VAE-2 (Razavi et al. 2019): a bottom latent map and a top map at half its resolution.

  bottom encoder: image -> h_b, the VQ-VAE encoder (H / 2**len(model.conv_channels))
  top encoder:    h_b -> one more stride-2 convolution, 3x3 conv, residual blocks -> z_e top
  the top is quantized first; its codes are decoded (residual blocks, x2 upsampling) to the
  bottom resolution and concatenated to h_b, whose 1x1 projection is quantized as the bottom
  decoder:        [x2-upsampled top codes, bottom codes] -> the VQ-VAE decoder -> image

So the bottom codes are chosen knowing the top ones and only need to carry what the top
does not (the local detail). The two levels have quantizers of the same kind and settings
(`model.quantizer` and its options, quantizer_spec.py: codebooks of the same
`model.num_codes` x `model.code_dim` and EMA settings, or the same FSQ grid), and the loss
sums both levels' terms (losses/vqvae.py). Metrics carry a level suffix
(train/perplexity_top, eval/perplexity_bottom, ...); eval/perplexity and
eval/codebook_usage are the bottom level's, which holds most of the image. The PCA
baseline has as many components as both maps have positions.

For the prior: `encode_indices(x) -> (top (B, H'/2, W'/2), bottom (B, H', W'))`,
`decode_indices(top, bottom) -> images`; `vq_metrics.encode_source` works for both families.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaelab.errors import ConfigError
from vaelab.models import nets, vq_metrics, vqvae
from vaelab.models.base import Family
from vaelab.models.quantizer_spec import OPTIONS, QuantizerSpec, refuse_multiple_indices
from vaelab.models.vq_trunk import ConvSpec, Decoder, Encoder, dtype_of


class VQVAE2(nn.Module):
  spec: ConvSpec
  quantizer: QuantizerSpec
  image_shape: tuple[int, int, int]
  axis_name: str | None = None

  LEVELS = ("top", "bottom")

  def setup(self):
    width = self.spec.channels[-1]
    code_dim = self.quantizer.code_dim
    top = dataclasses.replace(self.spec, channels=(width,))
    self.encoder_bottom = Encoder(self.spec)
    self.encoder_top = Encoder(top)
    self.pre_vq_top = self.spec.conv(code_dim, (1, 1))
    self.vq_top = self.quantizer.module(self.axis_name, name="vq_top")
    # The top codes at the bottom resolution, which condition the bottom quantization.
    self.decoder_top = Decoder(top, code_dim)
    self.pre_vq_bottom = self.spec.conv(code_dim, (1, 1))
    self.vq_bottom = self.quantizer.module(self.axis_name, name="vq_bottom")
    self.upsample_top = nets.Upsample(code_dim, nets.compute_dtype(self.spec.dtype))
    self.decoder = Decoder(self.spec, self.image_shape[-1])

  def _levels(self, x, keys=None):
    h = self.encoder_bottom(x)
    # Separate key streams, so that the two codebooks restart from different rows.
    fold = lambda i: None if keys is None else jax.vmap(jax.random.fold_in, (0, None))(keys, i)
    # The quantizers see float32 (see VQVAE.encode).
    f32 = lambda z: z.astype(jnp.float32)
    top = self.vq_top(f32(self.pre_vq_top(self.encoder_top(h))), fold(0))
    cond = self.decoder_top(top["quantized"])
    bottom = self.vq_bottom(f32(self.pre_vq_bottom(jnp.concatenate([h, cond], -1))), fold(1))
    return top, bottom

  def _decode(self, top, bottom):
    """Logits from the top and bottom decoder inputs (code vectors or straight-through)."""
    return self.decoder(jnp.concatenate([self.upsample_top(top), bottom], -1))

  def __call__(self, x, keys=None):
    """(decoder logits, (top, bottom) quantizer outputs); updates EMA codebooks when the
    "vq" collection is mutable."""
    top, bottom = self._levels(x, keys)
    return self._decode(top["quantized"], bottom["quantized"]), (top, bottom)

  def encode_indices(self, x):
    """Images -> (top int32 (B, H'/2, W'/2), bottom int32 (B, H', W')); a residual quantizer
    is refused (quantizer_spec.refuse_multiple_indices)."""
    refuse_multiple_indices(self.quantizer)
    return self.code_maps(x)

  def code_indices(self, x):
    return self.encode_indices(x)

  def code_maps(self, x):
    """Like encode_indices for every quantizer (residual: a last axis of num_quantizers)."""
    top, bottom = self._levels(x)
    return top["indices"], bottom["indices"]

  def decode_indices(self, top, bottom):
    """Top and bottom code maps -> images (B, H, W, C) in [0, 1]."""
    return jax.nn.sigmoid(self._decode(self.vq_top.lookup(top), self.vq_bottom.lookup(bottom)))

  def quantize(self, x):
    """Both quantized maps (the decoder inputs), flattened and concatenated (B, F): the
    features a probe reads."""
    top, bottom = self._levels(x)
    flat = lambda z: z.reshape(z.shape[0], -1)
    return jnp.concatenate([flat(top["quantized"]), flat(bottom["quantized"])], -1)

  def reconstruct(self, x):
    return jax.nn.sigmoid(self(x)[0])


def make_model(config, info):
  h, w, _ = info.image_shape
  f = 2**(len(config.model.conv_channels) + 1)
  if h % f or w % f:
    raise ConfigError(
        f"model.conv_channels has {len(config.model.conv_channels)} stride-2 layers and the "
        f"top level one more, so image height and width must be multiples of {f}; the data "
        f"({config.data.name}) has {h}x{w}")
  return VQVAE2(ConvSpec.from_config(config.model, dtype_of(config)),
                QuantizerSpec.from_config(config.model), tuple(info.image_shape))


def latent_shapes(model) -> list[tuple[int, int]]:
  """(H', W') of the top and the bottom map."""
  (h, w), = vqvae.latent_shapes(model)
  return [(h // 2, w // 2), (h, w)]


def final_analyses(config, model, variables, train_source, eval_source):
  out = vq_metrics.final_analyses(config, model, variables, train_source, eval_source)
  out["eval/perplexity"] = out["eval/perplexity_bottom"]
  out["eval/codebook_usage"] = out["eval/codebook_usage_bottom"]
  return out


FAMILY = Family(
    name="vqvae2",
    make_model=make_model,
    make_loss=vqvae.make_loss,
    make_eval_metrics=vqvae.make_eval_metrics,
    final_analyses=final_analyses,
    hparams=vqvae.hparams,
    validate=vqvae.validate,
    final_baselines=vqvae.make_final_baselines(make_model, latent_shapes),
    features=vqvae.FAMILY.features,
    encode=vqvae.encode,
    decode=vqvae.decode,
    mixed_precision=True,
    options=OPTIONS,
)
