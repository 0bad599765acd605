"""Lite Transformer (Long-Short Range Attention), Wu, Liu et al., ICLR 2020."""

from lite_jax.lite_transformer.beam_search import beam_search
from lite_jax.lite_transformer.beam_search import greedy_decode
from lite_jax.lite_transformer.compress import compress_and_evaluate
from lite_jax.lite_transformer.export import export_artifacts, export_workdir
from lite_jax.lite_transformer.model import BranchSpec
from lite_jax.lite_transformer.model import ConvBranch
from lite_jax.lite_transformer.model import DEFAULT_KERNEL_SIZES
from lite_jax.lite_transformer.model import EncoderDecoder
from lite_jax.lite_transformer.model import LongShortRangeAttention
from lite_jax.lite_transformer.model import TransformerConfig
from lite_jax.lite_transformer.model import init_cache
from lite_jax.lite_transformer.model import parse_branches
from lite_jax.lite_transformer.train import evaluate
from lite_jax.lite_transformer.train import profile
from lite_jax.lite_transformer.train import train_and_evaluate
from lite_jax.lite_transformer.train import translate
from lite_jax.lite_transformer.train import TRANSLATION
from lite_jax.lite_transformer.train import TaskSpec
from lite_jax.lite_transformer.rouge import rouge_scores
from lite_jax.lite_transformer.summarize import SUMMARIZATION
from lite_jax.lite_transformer.lm import LanguageModel
from lite_jax.lite_transformer.lm import LanguageModelConfig
