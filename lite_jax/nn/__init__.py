"""Layers shared by more than one paper."""

from lite_jax.nn.attention import MultiHeadAttention
from lite_jax.nn.attention import causal_mask
from lite_jax.nn.attention import key_padding_mask
from lite_jax.nn.conv1d import DynamicConv1D
from lite_jax.nn.conv1d import LightweightConv1D
from lite_jax.nn.depthwise import depthwise_conv2d
from lite_jax.nn.embeddings import normal_embedding_init
from lite_jax.nn.embeddings import sinusoidal_positions
from lite_jax.nn.linear import dense
