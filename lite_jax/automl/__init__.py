"""Hardware-aware design automation: HAQ (mixed-precision quantization) today, AMC (channel
pruning) and ProxylessNAS next, over their shared pieces: the DDPG agent (`ddpg`), image
classifiers (`classifiers`), hardware cost models and device latency tables (`hardware`).
Fake-quantization layers live in `lite_jax.nn` (Lite Transformer compression uses them too)."""

from lite_jax.automl import classifiers, ddpg, haq, haq_env, hardware, training  # noqa: F401
from lite_jax.automl.classifiers import (MobileNetV1, MobileNetV2, ResNet50, TinyMobileNetV2,
                                         build_classifier, profile_classifier)
from lite_jax.automl.ddpg import DDPG, DDPGConfig
from lite_jax.automl.hardware import (BitFusionCost, BitSerialCost, CostModel, LatencyTable,
                                      LookupTableCost, SizeCost, build_latency_table,
                                      measure_model_latency)
