"""Gradient leakage: recovering training data from shared gradients, and defenses against it.

Deep Leakage from Gradients (Zhu et al. 2019) showed that the gradient a federated client
shares gives its training batch away: optimise dummy data until its gradient matches. This
package makes that a fast, batched tool. JAX differentiates through gradients natively and
every attack is a pure function, so `jax.vmap` runs many attacks (seeds, images, defense
settings) as one compiled program.

Victims (`victims.py`): the reference's sigmoid `LeNet` with U(-0.5, 0.5) init, a
`SigmoidResNet`, an `MLP`, and any Flax model + loss via `Victim.from_module`.

Attacks (`attacks.py`, `bert.py`, `text.py`):
  * `dlg`: squared-L2 gradient matching of dummy images and soft labels with L-BFGS that
    behaves like PyTorch's (`lbfgs.py`), plus a divergence safeguard and restarts.
  * `idlg`: the label read off the classifier gradient (`idlg_labels`), then the image.
  * `inverting_gradients`: cosine distance + total variation, signed Adam, box, restarts.
  * `bert_attack`: a word-piece sentence from a BERT-like masked LM's gradient (`BertMLM`,
    `mlm_gradient`): DLG on input embeddings + soft labels, then a discrete swap/substitution
    search scored by the exact gradient distance; `text_attack`: the same DLG on a tiny
    character LM's next-token gradient.

Defenses (`defenses.py`): Gaussian / Laplacian noise of a given variance, fp16 and int8
quantisation, magnitude pruning of a given ratio; `defense_sweep` prices each one in attack
success and in the accuracy of a classifier trained with it.

Metrics (`metrics.py`): MSE, PSNR, SSIM, label accuracy. Runs (`experiment.py`):
`run_attack`, `defense_sweep`, `run_text_attack`, and the modes of `python -m experiments.dlg`
(`attack`, `sweep`, `batch_sweep`), which load the images `config.data` names.

Example:
  victim = leakage.make_victim("lenet", jax.random.PRNGKey(0), input_shape=(32, 32, 3),
                               num_classes=100)
  grads = victim.gradient(x, victim.one_hot(y))            # what the client shares
  result = leakage.dlg(victim, grads, jax.random.PRNGKey(1))
  many = jax.vmap(lambda k: leakage.dlg(victim, grads, k))(jax.random.split(key, 64))
"""

from lite_jax.leakage.attacks import (AttackResult, InvertingGradientsConfig,
                                      classifier_kernel_gradient, cosine_distance, dlg, idlg,
                                      idlg_labels, inverting_gradients, l2_distance,
                                      total_variation)
from lite_jax.leakage.bert import BertMLM, TextAttackResult, bert_attack, mlm_gradient
from lite_jax.leakage.defenses import Defense, apply_defense, defend
from lite_jax.leakage.experiment import (attack, batch_sweep, defense_sweep, run_attack,
                                         run_text_attack, sweep)
from lite_jax.leakage.lbfgs import LBFGSConfig, minimize_blockwise
from lite_jax.leakage.metrics import label_accuracy, mse, psnr, ssim
from lite_jax.leakage.text import TinyTransformerLM, sequence_gradient, text_attack
from lite_jax.leakage.victims import (MLP, LeNet, SigmoidResNet, Victim, make_victim,
                                      soft_cross_entropy)
