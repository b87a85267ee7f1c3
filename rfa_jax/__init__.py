"""rfa_jax: Random Feature Attention (Peng et al., ICLR 2021) in JAX and Flax NNX."""

from rfa_jax.attention import DEFAULT_CHUNK_SIZE, decode_step, prefill, rfa, rfa_cross
from rfa_jax.causal import INTER_CHUNK, DecodeState, init_decode_state
from rfa_jax.module import RFAAttention
from rfa_jax.normalizer import DENOMINATOR_FLOOR, NORMALIZERS
from rfa_jax.random_features import (ORTHOGONAL_METHODS, feature_dim, feature_map,
                                     random_projection)
from rfa_jax.reference import kernel_attention, rfa_reference, softmax_attention
from rfa_jax.window import window_attention

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DENOMINATOR_FLOOR", "INTER_CHUNK", "NORMALIZERS", "ORTHOGONAL_METHODS",
    "DecodeState", "RFAAttention", "decode_step", "feature_dim", "feature_map", "init_decode_state", "kernel_attention",
    "prefill", "random_projection", "rfa", "rfa_cross", "rfa_reference", "softmax_attention",
    "window_attention",
]
