"""Layers for more than one paper, or built to be: their second users are on the way.

Today `depthwise_conv2d` serves GAN Compression's mobile generators and (through the counter's
convention) the MACs of every depthwise conv; attention with a decoding cache, lightweight and
dynamic 1-D convolutions, fairseq-initialized dense layers with logical axes, embeddings and
label-smoothed cross-entropy serve Lite Transformer translation, and are where its language
model and summarizer, and HAQ's quantized layers, will come from. A paper package never holds
a layer another paper needs: it moves here.
"""

from lite_jax.nn.attention import MultiHeadAttention
from lite_jax.nn.attention import causal_mask
from lite_jax.nn.attention import key_padding_mask
from lite_jax.nn.conv1d import DynamicConv1D
from lite_jax.nn.conv1d import LightweightConv1D
from lite_jax.nn.depthwise import depthwise_conv2d
from lite_jax.nn.embeddings import normal_embedding_init
from lite_jax.nn.embeddings import sinusoidal_positions
from lite_jax.nn.linear import dense
