"""ESM-2's architecture (Lin et al. 2023) as a masked language model, loading Hugging Face's layout.

Pre-LayerNorm Transformer encoder: token embeddings (no positional embedding) with ESM's token
dropout (masked positions' embeddings zeroed, the rest scaled by ``(1 - 0.15 x 0.8) / (1 - observed
mask share)``), then per layer ``x + Attn(LN(x))`` and ``x + W2 GELU(W1 LN(x))``; rotary position
embeddings on queries and keys (the query scaled by ``head_dim^-1/2`` first, as ESM does); a final
LayerNorm; the head ``LN(GELU(dense(x)))`` projected by the *tied* embedding matrix plus a bias.
GELU is the exact (erf) one. Attention runs through ``F.scaled_dot_product_attention`` (the flash
kernel on a GPU) with padded keys masked.

:data:`SHAPES` holds ESM-2's published shapes and a tiny one for CPU tests;
:func:`load_hf_state_dict` takes the state dict of a ``transformers.EsmForMaskedLM`` of the same
shape (a checkpoint such as ``facebook/esm2_t6_8M_UR50D``, read from disk).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cudalab.protein.data import ALPHABET, MASK, PAD

#: ESM's training masking share of masked-token inputs (15 % chosen, 80 % of them ``<mask>``).
MASK_RATIO_TRAIN = 0.15 * 0.8


@dataclass(frozen=True, slots=True)
class EsmShape:
    """A model's size: layers, hidden width, attention heads (the FFN is 4 x hidden)."""

    layers: int
    hidden: int
    heads: int
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"hidden {self.hidden} must split into {self.heads} heads of even width")

    @property
    def ffn(self) -> int:
        return 4 * self.hidden

    def parameters(self, vocab: int = len(ALPHABET)) -> int:
        """Trainable parameters (the tied head counted once)."""
        h, f = self.hidden, self.ffn
        per_layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
        return vocab * h + self.layers * per_layer + 2 * h + (h * h + h) + 2 * h + vocab


#: ESM-2's published shapes (esm2_t6_8M ... esm2_t33_650M) and a tiny one for CPU tests.
SHAPES: dict[str, EsmShape] = {
    "tiny": EsmShape(layers=2, hidden=64, heads=4),
    "8M": EsmShape(layers=6, hidden=320, heads=20),
    "35M": EsmShape(layers=12, hidden=480, heads=20),
    "150M": EsmShape(layers=30, hidden=640, heads=20),
    "650M": EsmShape(layers=33, hidden=1280, heads=20),
}


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, ``x Phi(x)`` (ESM's; ``F.gelu``'s default is the same function)."""
    return F.gelu(x, approximate="none")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Rotary(nn.Module):
    """cos and sin of the rotary angles for positions ``0 .. L-1`` (the frequencies are a buffer,
    not a weight)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.inv_freq: torch.Tensor
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(length, device=device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.to(device))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


class Attention(nn.Module):
    """Pre-LN multi-head self-attention with rotary queries and keys, and its residual."""

    def __init__(self, s: EsmShape, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = s.heads, s.hidden // s.heads
        self.ln = nn.LayerNorm(s.hidden, eps=s.layer_norm_eps)
        self.query = nn.Linear(s.hidden, s.hidden)
        self.key = nn.Linear(s.hidden, s.hidden)
        self.value = nn.Linear(s.hidden, s.hidden)
        self.out = nn.Linear(s.hidden, s.hidden)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.ln(x)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q = split(self.query(h)) * self.head_dim**-0.5  # ESM scales before the rotation
        k, v = split(self.key(h)), split(self.value(h))
        dtype = q.dtype
        qf, kf = q.float(), k.float()
        q = (qf * cos + rotate_half(qf) * sin).to(dtype)
        k = (kf * cos + rotate_half(kf) * sin).to(dtype)
        o = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=keep[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
            scale=1.0,
        )
        return x + self.out(o.transpose(1, 2).reshape(b, n, -1))


class Layer(nn.Module):
    """One encoder layer: attention, then the pre-LN feed-forward block, each with its residual."""

    def __init__(self, s: EsmShape, dropout: float) -> None:
        super().__init__()
        self.attn = Attention(s, dropout)
        self.ffn_ln = nn.LayerNorm(s.hidden, eps=s.layer_norm_eps)
        self.fc1 = nn.Linear(s.hidden, s.ffn)
        self.fc2 = nn.Linear(s.ffn, s.hidden)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        x = self.attn(x, keep, cos, sin)
        return x + self.fc2(gelu(self.fc1(self.ffn_ln(x))))


class EsmMLM(nn.Module):
    """ESM-2 as a masked language model: ``(B, L)`` tokens to ``(B, L, 33)`` logits.

    ``checkpointing`` recomputes each layer's activations in the backward pass instead of storing
    them (less memory, about a third more compute).
    """

    def __init__(self, shape: EsmShape, *, dropout: float = 0.0, checkpointing: bool = False) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(len(ALPHABET), shape.hidden, padding_idx=PAD)
        self.rotary = Rotary(shape.hidden // shape.heads, shape.rope_theta)
        self.layers = nn.ModuleList(Layer(shape, dropout) for _ in range(shape.layers))
        self.final_ln = nn.LayerNorm(shape.hidden, eps=shape.layer_norm_eps)
        self.head_dense = nn.Linear(shape.hidden, shape.hidden)
        self.head_ln = nn.LayerNorm(shape.hidden, eps=shape.layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(len(ALPHABET)))
        self.checkpointing = checkpointing
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT-style initialisation, as ``EsmForMaskedLM``: normal(0, 0.02) weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
                with torch.no_grad():
                    m.weight[PAD].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = tokens != PAD
        x = self.embed(tokens)
        # ESM's token dropout: masked inputs carry no embedding, the rest are rescaled to the training share
        is_mask = tokens == MASK
        x = x.masked_fill(is_mask[..., None], 0.0)
        observed = is_mask.sum(-1).float() / keep.sum(-1).clamp_min(1).float()
        x = (x * ((1 - MASK_RATIO_TRAIN) / (1 - observed))[:, None, None]).to(x.dtype)
        x = x * keep[..., None].to(x.dtype)
        cos, sin = self.rotary(tokens.shape[1], tokens.device)
        for layer in self.layers:
            if self.checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, keep, cos, sin, use_reentrant=False)
            else:
                x = layer(x, keep, cos, sin)
        x = self.final_ln(x)
        x = self.head_ln(gelu(self.head_dense(x)))
        return F.linear(x, self.embed.weight) + self.head_bias  # the head tied to the embedding


#: Hugging Face ``EsmForMaskedLM`` names to ours; names matching :data:`HF_IGNORED` carry nothing
#: the MLM uses (rotary frequencies are recomputed; the contact head is another task; the decoder is
#: the tied embedding).
HF_NAMES: tuple[tuple[str, str], ...] = (
    (r"^esm\.embeddings\.word_embeddings\.", "embed."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.attn.\2."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn.out."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.LayerNorm\.", r"layers.\1.attn.ln."),
    (r"^esm\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.fc1."),
    (r"^esm\.encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.fc2."),
    (r"^esm\.encoder\.layer\.(\d+)\.LayerNorm\.", r"layers.\1.ffn_ln."),
    (r"^esm\.encoder\.emb_layer_norm_after\.", "final_ln."),
    (r"^lm_head\.dense\.", "head_dense."),
    (r"^lm_head\.layer_norm\.", "head_ln."),
    (r"^lm_head\.bias$", "head_bias"),
)
HF_IGNORED = re.compile(r"(rotary_embeddings\.inv_freq|contact_head\.|lm_head\.decoder\.weight|position_ids)")


def load_hf_state_dict(model: EsmMLM, state: dict[str, torch.Tensor]) -> None:
    """Load an ``EsmForMaskedLM`` state dict into ``model``; ``ValueError`` naming what does not fit
    (a missing or unexpected weight, another shape)."""
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for name, value in state.items():
        if HF_IGNORED.search(name):
            continue
        for pattern, repl in HF_NAMES:
            if re.search(pattern, name):
                mapped[re.sub(pattern, repl, name)] = value
                break
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"not an ESM masked LM: unexpected weights {', '.join(unknown[:3])}")
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise ValueError(f"weights missing for {', '.join(missing[:3])} (another number of layers?)")
    for k, v in mapped.items():
        if k not in own:
            raise ValueError(f"{k}: no such weight in a {model.shape.layers}-layer model")
        if own[k].shape != v.shape:
            raise ValueError(f"{k}: shape {tuple(v.shape)}, the model's is {tuple(own[k].shape)}")
    model.load_state_dict(mapped, strict=True)


def flops_per_token(shape: EsmShape, length: int) -> float:
    """Training FLOPs per token (forward and backward, 3 x the forward's multiply-adds x 2): the
    matrix products of the layers, the attention scores and values at sequence ``length``, and the
    head (Kaplan et al. 2020's count, with attention)."""
    h, f, n = shape.hidden, shape.ffn, shape.layers
    per_layer = 2 * (4 * h * h + 2 * h * f) + 2 * 2 * length * h
    head = 2 * (h * h + h * len(ALPHABET))
    return 3.0 * (n * per_layer + head)


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy), capped where it would overflow."""
    return math.exp(min(loss, 50.0))
