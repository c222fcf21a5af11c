"""A compile-friendly MPT attention, output-identical to transformers' own.

transformers' ``MptAttention.forward`` (5.x, modeling_mpt.py ~line 111-121) computes
``query_length = seq_length + cache.get_seq_length()`` only to slice the ALiBi bias. With a
static cache ``get_seq_length()`` is a data-dependent tensor reduction, and turning it into a
Python int is a ``Tensor.item()`` that breaks the ``torch.compile`` graph in every layer, so CUDA
graphs cannot capture a decode step. The bias MPT builds has shape (n_heads, 1, max_seq_len):
its query dimension is 1, so the query-side slice start ``max(0, 1 - query_length)`` is always 0
and the cache length is never needed. This forward skips that computation when the query
dimension is 1 and is otherwise a line-for-line copy. The hf_compiled backend checks greedy
tokens against eager generate on every run (``outputs_match``), so a divergence cannot pass
silently.
"""
from __future__ import annotations

import torch
from torch import nn


def _mpt_attention_forward(self, hidden_states, position_bias, cache=None, attention_mask=None, **kwargs):
    batch_size, seq_length = hidden_states.shape[:2]

    mixed_qkv = self.Wqkv(hidden_states)
    if self.clip_qkv:
        mixed_qkv = mixed_qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)

    query_states, key_states, value_states = mixed_qkv.chunk(3, dim=2)
    query_states = query_states.reshape(batch_size, seq_length, self.n_heads, self.head_dim).transpose(1, 2)
    key_states = key_states.reshape(batch_size, seq_length, self.n_heads, self.head_dim).transpose(1, 2)
    value_states = value_states.reshape(batch_size, seq_length, self.n_heads, self.head_dim).transpose(1, 2)

    if cache is not None:
        key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

    attention_scores = torch.matmul(query_states, key_states.transpose(-1, -2)) * self.softmax_scale

    if position_bias is not None:
        if len(position_bias.shape) != 3:
            raise ValueError(f"Expecting position_bias shape to be 3 dimensions, got {len(position_bias.shape)}")
        key_length = key_states.shape[-2]
        if position_bias.size(1) == 1:
            position_bias_query_index = 0  # = max(0, 1 - query_length) for any query_length >= 1
        else:
            query_length = seq_length if cache is None else seq_length + cache.get_seq_length()
            position_bias_query_index = max(0, position_bias.size(1) - query_length)
        position_bias_key_index = max(0, position_bias.size(2) - key_length)
        position_bias = position_bias[:, position_bias_query_index:, position_bias_key_index:]
        attention_scores = attention_scores + position_bias

    if attention_mask is not None:
        attention_scores = attention_scores.masked_fill(attention_mask, torch.finfo(query_states.dtype).min)

    attn_weights = nn.functional.softmax(attention_scores.float(), dim=-1).to(value_states.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=self.attn_dropout_p, training=self.training)

    context_states = torch.matmul(attn_weights, value_states)
    context_states = context_states.permute(0, 2, 1, 3).contiguous().view(batch_size, seq_length, -1)
    attn_output = self.out_proj(context_states)
    return attn_output, attn_weights


def patch_mpt_attention(model: nn.Module) -> int:
    """Give every MptAttention of ``model`` the compile-friendly forward; returns how many."""
    from transformers.models.mpt.modeling_mpt import MptAttention

    patched = 0
    for module in model.modules():
        if isinstance(module, MptAttention):
            module.forward = _mpt_attention_forward.__get__(module)
            patched += 1
    return patched


def unpatch_mpt_attention(model: nn.Module) -> None:
    """Restore transformers' own forward (the patch is an instance attribute over the class method)."""
    from transformers.models.mpt.modeling_mpt import MptAttention

    for module in model.modules():
        if isinstance(module, MptAttention) and "forward" in module.__dict__:
            del module.forward
