"""ESM-2's architecture: the same logits as Hugging Face's ``EsmForMaskedLM`` with its weights, the
published shapes' sizes, and the faults of a state dict that does not fit."""

from __future__ import annotations

import pytest
import torch

from cudalab.protein.data import MASK, PAD, encode, mask_tokens, pad_batch
from cudalab.protein.model import SHAPES, EsmMLM, EsmShape, load_hf_state_dict

transformers = pytest.importorskip("transformers")


def _hf(shape: EsmShape) -> torch.nn.Module:
    cfg = transformers.EsmConfig(
        vocab_size=33, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, intermediate_size=shape.ffn, max_position_embeddings=1026,
        position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False,
        pad_token_id=PAD, mask_token_id=MASK, layer_norm_eps=shape.layer_norm_eps,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.EsmForMaskedLM(cfg).eval()
    with torch.no_grad():  # random biases and norms too, so that every weight's place is checked
        for name, p in model.named_parameters():
            if "bias" in name or "LayerNorm" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_logits_equal_hugging_faces_with_its_weights() -> None:
    shape = SHAPES["tiny"]
    hf = _hf(shape)
    ours = EsmMLM(shape).eval()
    load_hf_state_dict(ours, hf.state_dict())
    seqs = [encode("MKTAYIAKQRQISFVKSHFSRQ"), encode("MSKGEELFTGVVPILVELDGDVNGHKFSV"), encode("MA")]
    tokens = pad_batch(seqs)
    inputs, _ = mask_tokens(tokens, torch.Generator().manual_seed(1), rate=0.3)
    assert (inputs == MASK).any() and (inputs == PAD).any()
    with torch.no_grad():
        want = hf(input_ids=inputs, attention_mask=(inputs != PAD).long()).logits
        got = ours(inputs)
    keep = inputs != PAD  # padded positions' outputs are not defined by either
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-4, atol=1e-5)


def test_published_shapes_have_their_sizes() -> None:
    # ESM-2's names state their size: t6 8M, t12 35M, t30 150M, t33 650M
    for name, (lo, hi) in {
        "8M": (7e6, 8.5e6),
        "35M": (33e6, 36e6),
        "150M": (145e6, 152e6),
        "650M": (645e6, 655e6),
    }.items():
        assert lo < SHAPES[name].parameters() < hi, name
    tiny = EsmMLM(SHAPES["tiny"])
    assert sum(p.numel() for p in tiny.parameters()) == SHAPES["tiny"].parameters()


def test_a_state_dict_that_does_not_fit_is_refused() -> None:
    hf = _hf(SHAPES["tiny"]).state_dict()
    deeper = EsmMLM(EsmShape(layers=3, hidden=64, heads=4))
    with pytest.raises(ValueError, match="missing"):
        load_hf_state_dict(deeper, hf)
    wider = EsmMLM(EsmShape(layers=2, hidden=128, heads=4))
    with pytest.raises(ValueError, match="shape"):
        load_hf_state_dict(wider, hf)
    with pytest.raises(ValueError, match="unexpected"):
        load_hf_state_dict(EsmMLM(SHAPES["tiny"]), {**hf, "classifier.weight": torch.zeros(2)})


def test_checkpointing_changes_memory_not_results() -> None:
    torch.manual_seed(0)
    a = EsmMLM(SHAPES["tiny"]).train()
    b = EsmMLM(SHAPES["tiny"], checkpointing=True).train()
    b.load_state_dict(a.state_dict())
    x = pad_batch([encode("MKTAYIAKQRQISFVKSHFSRQ"), encode("MSKGEELFTGV")])
    for m in (a, b):
        m(x).float().logsumexp(-1).mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
