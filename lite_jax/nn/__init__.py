"""Layers for more than one paper, or built to be: their second users are on the way.

Today `depthwise_conv2d` serves GAN Compression's mobile generators and (through the counter's
convention) the MACs of every depthwise conv; attention with a decoding cache, lightweight and
dynamic 1-D convolutions, fairseq-initialized dense layers with logical axes, embeddings and
label-smoothed cross-entropy serve Lite Transformer translation, and are where its language
model and summarizer will come from; fake quantization (`quant`), k-means weight sharing
(`weight_sharing`) and layer introspection (`introspect`) serve HAQ, AMC and the compressed
Lite Transformer. A paper package never holds a layer another paper needs: it moves here.
"""

from lite_jax.nn.adaptive import AdaptiveInput
from lite_jax.nn.adaptive import AdaptiveSoftmax
from lite_jax.nn.attention import MultiHeadAttention
from lite_jax.nn.attention import causal_mask
from lite_jax.nn.attention import key_padding_mask
from lite_jax.nn.conv1d import DynamicConv1D
from lite_jax.nn.conv1d import LightweightConv1D
from lite_jax.nn.conv2d import tap_sum_conv2d
from lite_jax.nn.depthwise import depthwise_conv2d
from lite_jax.nn.embeddings import normal_embedding_init
from lite_jax.nn.embeddings import sinusoidal_positions
from lite_jax.nn.linear import dense
from lite_jax.nn.introspect import LayerInfo
from lite_jax.nn.introspect import list_layers
from lite_jax.nn.quant import FULL_PRECISION
from lite_jax.nn.quant import bitops
from lite_jax.nn.quant import bits_arrays
from lite_jax.nn.quant import calibrate
from lite_jax.nn.quant import calibrate_clip
from lite_jax.nn.quant import fake_quant
from lite_jax.nn.quant import kl_threshold
from lite_jax.nn.quant import model_size_bits
from lite_jax.nn.quant import quantized_apply
from lite_jax.nn.quant import validate_policy
from lite_jax.nn.weight_sharing import kmeans_1d
from lite_jax.nn.weight_sharing import share_weights
from lite_jax.nn.weight_sharing import snap_to_centroids
