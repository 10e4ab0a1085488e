"""VQGAN tokenizer on ImageNet at 256x256 with MaskGIT's VQGAN trunk (Chang et al. 2022).

  # the data, once, on a machine with TensorFlow (ImageNet's tars in DIR; never downloaded):
  tfds build imagenet2012 --manual_dir=DIR --file_format=array_record [--data_dir=TFDS_DIR]
  # train
  python -m vaelab.main --config=configs/vqgan_imagenet.py --workdir=/tmp/vqgan_imagenet \
      --config.data.data_dir=TFDS_DIR \
      --config.loss.perceptual=lpips --config.loss.lpips_weights=lpips_vgg16.npz
  # rFID of the trained tokenizer on the 50,000 validation images (reference: MaskGIT's
  # VQGAN, rFID 2.28), with the Inception weights of evaluate/image_quality.py:
  python -m vaelab.main --config=configs/vqgan_imagenet.py --workdir=/tmp/vqgan_imagenet \
      --mode=eval --config.data.data_dir=TFDS_DIR --config.eval.inception_weights=FILE
  # MaskGIT's own codebook (1024 codes of 256 dims) instead of the 2^14 default:
  ... --config.model.num_codes=1024
  python -m vaelab.main --config=configs/vqgan_imagenet.py:runlocal --workdir=/tmp/vqgan_in_local \
      --config.data.data_dir=TFDS_DIR

The trunk is MaskGIT's released tokenizer's: 128 filters, channel multipliers
(1, 1, 2, 2, 4), two residual blocks per level, a 16x16 map of 256-d codes; the codebook
is the variants' default of 2^14 codes (`quantizer=NAME` as in every VQ config; MaskGIT's
has 1024). MaskGIT's repository releases the tokenizer's weights and shape but not its
training schedule, so the rest follows taming-transformers' ImageNet VQGAN: taming's
discriminator (3 layers, 64 filters, 30x30 patches), hinge loss with the adaptive weight
times 0.8 from step 20,000, Adam at 1e-4 with b1 0.5, b2 0.9 for both networks, batch 256
and 500k steps with a warm-up and cosine decay. Pixels are scored by squared error
(`model.likelihood=sigmoid_sse`) beside LPIPS when it is given.

Data (`vaelab/data/tfds_stream.py`): the prepared TFDS split is read batch by batch, never
held in memory; each image's shorter side is resized to `data.image_size` (256), then
training takes a random square (taming's crop; `data.random_flip` adds mirroring) and
evaluation the centre one, as rFID is measured. Probe-FID is off (`eval.probe_fid`): on
ImageNet, rFID is the number papers give. Prepared 256x256 npz splits still work:
`--config.data.name=npz --config.data.train_path=... --config.data.eval_path=...`.

`runlocal`: the same data at 32x32 (16 filters, multipliers (1, 2), one residual block,
2^10 codes of 16 dims, 2 discriminator layers of 16 filters) for 200 steps.
"""
from vaelab import config_base
from vaelab.data import tfds_stream
from vaelab.models import vqgan


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq", adversarial=True)
  c = config_base.base_config()
  vqgan.config_keys(c)
  c.data.name = "imagenet2012"
  c.data.train_split, c.data.eval_split = "train", "validation"
  tfds_stream.config_keys(c, image_size=256)
  c.model.trunk = "maskgit"
  c.model.filters = 128
  c.model.channel_multipliers = (1, 1, 2, 2, 4)
  c.model.num_res_blocks = 2
  c.model.num_codes = 2**14
  c.model.code_dim = 256
  c.model.ema_decay = 0.99
  c.model.dead_code_steps = 100
  c.model.likelihood = "sigmoid_sse"
  c.model.disc_filters = 64
  c.model.disc_layers = 3
  c.loss.commitment = 0.25
  c.loss.gan = "hinge"
  c.loss.disc_weight = 0.8
  c.loss.disc_start = 20_000
  c.batch_size = 256
  c.num_train_steps = 500_000
  c.log_every = 500
  c.eval_every = 25_000
  c.checkpoint_every = 10_000
  c.eval.batch_size = 250
  c.eval.probe_fid = False
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 5_000
  c.discriminator_optimizer.learning_rate = 1e-4
  if arg.runlocal:
    c.data.image_size = 32
    c.model.filters = 16
    c.model.channel_multipliers = (1, 2)
    c.model.num_res_blocks = 1
    c.model.num_codes = 2**10
    c.model.code_dim = 16
    c.model.dead_code_steps = 20
    c.model.disc_filters = 16
    c.model.disc_layers = 2
    c.batch_size = 16
    c.num_train_steps = 200
    c.loss.disc_start = 100
    c.log_every = 50
    c.eval_every = c.checkpoint_every = 100
    c.eval.batch_size = 16
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 20
  vqgan.apply_variant(c, arg.quantizer, arg.adversarial)
  return c
