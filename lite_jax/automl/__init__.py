"""Hardware-aware design automation: HAQ (mixed-precision quantization), AMC (channel pruning)
and ProxylessNAS (architecture search), over their shared pieces: the DDPG agent (`ddpg`),
image classifiers (`classifiers`) and their training (`training`), hardware cost models and
device latency tables (`hardware`). Fake-quantization layers live in `lite_jax.nn` (Lite
Transformer compression uses them too)."""

from lite_jax.automl import (amc, amc_env, classifiers, ddpg, haq, haq_env,  # noqa: F401
                             hardware, proxyless, proxyless_net, pruning, training)
from lite_jax.automl.classifiers import (MobileNetV1, MobileNetV2, PlainCNN, ResNet50,
                                         TinyMobileNetV2, build_classifier, profile_classifier)
from lite_jax.automl.ddpg import DDPG, DDPGConfig
from lite_jax.automl.hardware import (BitFusionCost, BitSerialCost, CostModel, LatencyTable,
                                      LookupTableCost, SizeCost, build_latency_table,
                                      measure_model_latency)
from lite_jax.automl.proxyless import SuperNet
from lite_jax.automl.proxyless_net import (BlockLatencyTable, ProxylessNet, SearchSpace,
                                           build_block_latency_table, released)
from lite_jax.automl.pruning import Pruner, pruned_model, pruning_plan
