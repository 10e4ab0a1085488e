"""VQGAN (Esser et al. 2021) on MNIST: VQ-VAE's trunk ("vq") with a patch discriminator.

  python -m vaelab.main --config=configs/vqgan_mnist.py --workdir=/tmp/vqgan_mnist \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz
  python -m vaelab.main --config=configs/vqgan_mnist.py:runlocal --workdir=/tmp/vqgan_local \
      --config.data.name=npz --config.data.train_path=train.npz --config.data.eval_path=test.npz
  # another quantizer (vqvae.apply_preset), or no discriminator (the same model as a VQ-VAE):
  python -m vaelab.main --config=configs/vqgan_mnist.py:runlocal,quantizer=fsq,adversarial=False \
      --workdir=/tmp/vqgan_fsq [--config.data.* as above]

configs/vqvae_mnist.py's network (two stride-2 convolutions to a 7x7 map, EMA codebook with
dead-code restarts, Bernoulli pixels) at 2^14 codes, the tokenizer size of MaskGIT's
successors. The discriminator has 2 layers of 32 filters: three stride-2 layers would leave
a 28x28 digit one patch. The adversarial terms start halfway through training, as taming
starts them once reconstructions are recognisable; hinge loss, adaptive weight times 0.8.
There is no perceptual term: LPIPS's VGG trunk is trained on colour photographs
(`--config.loss.perceptual=lpips --config.loss.lpips_weights=FILE` turns it on).

`runlocal`: the narrow trunk of vqvae_mnist's runlocal, 2^10 codes and 1,000 steps.
"""
from vaelab import config_base
from vaelab.models import vqgan


def get_config(arg=None):
  arg = config_base.parse_arg(arg, runlocal=False, quantizer="vq", adversarial=True)
  c = config_base.base_config()
  vqgan.config_keys(c)
  c.data.name = "mnist"
  c.model.trunk = "vq"
  c.model.conv_channels = (32, 64)
  c.model.num_res_blocks = 2
  c.model.res_channels = 32
  c.model.num_codes = 2**14
  c.model.code_dim = 16
  c.model.ema_decay = 0.99
  c.model.dead_code_steps = 20
  c.model.likelihood = "bernoulli"
  c.model.disc_filters = 32
  c.model.disc_layers = 2
  c.loss.commitment = 0.25
  c.loss.gan = "hinge"
  c.loss.disc_weight = 0.8
  c.batch_size = 64
  c.num_train_steps = 2000
  c.loss.disc_start = 1000
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.optimizer.learning_rate = 2e-3
  c.optimizer.schedule = "cosine"
  c.discriminator_optimizer.learning_rate = 2e-4
  if arg.runlocal:
    c.model.conv_channels = (8, 16)
    c.model.res_channels = 8
    c.model.num_codes = 2**10
    c.model.code_dim = 4
    c.model.disc_filters = 16
    c.num_train_steps = 1000  # about a minute of training on a 2-core CPU
    c.loss.disc_start = 500
    c.eval_every = c.checkpoint_every = 500
  vqgan.apply_variant(c, arg.quantizer, arg.adversarial)
  return c
