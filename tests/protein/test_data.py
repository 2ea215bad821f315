"""Protein data: FASTA read strictly, ESM's alphabet, crops, token-budget batches, ESM's masking rule,
whole proteomes held out; every draw a function of (seed, epoch)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from cudalab.protein.data import (
    ALPHABET,
    CLS,
    EOS,
    MASK,
    PAD,
    UNK,
    TokenBatches,
    crop,
    decode,
    encode,
    epoch_rng,
    load_corpus,
    mask_tokens,
    pad_batch,
    read_fasta,
    split_proteomes,
    unigram_perplexity,
)

ECOLI = "UP000000625_83333.fasta"


@pytest.fixture(scope="module")
def proteomes(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "protein").glob("*.fasta"))


def test_the_e_coli_proteome_reads_whole(shared_data: Path) -> None:
    recs = read_fasta(shared_data / "protein" / ECOLI)
    assert len(recs) == 4401  # the README's count
    assert 1.30e6 < sum(len(r.sequence) for r in recs) < 1.40e6
    assert recs[0].id == "sp|A5A612|YMGJ_ECOLI" and recs[0].sequence.startswith("MSRRYSSATITLVILFCRRPHC")
    assert recs[0].sequence.endswith("VRQYYQKRVIFYPTTLQRTACKKCLFLMRDIIISS")  # lines joined


def test_fasta_faults_are_named_with_their_line(tmp_path: Path) -> None:
    cases = {
        "headless.fa": ("MKV\n>a\nMKV\n", "line 1: sequence before any '>' header"),
        "digit.fa": (">a\nMKV\nMK3V\n", "line 3: '3' is not an amino-acid code"),
        "empty_record.fa": (">a\n>b\nMKV\n", "line 1: record a has no sequence"),
        "empty.fa": ("\n\n", "no FASTA records"),
    }
    for name, (text, fault) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=fault) as err:
            read_fasta(tmp_path / name)
        assert name in str(err.value)
    (tmp_path / "bin.fa").write_bytes(b">a\nMK\xff\n")
    with pytest.raises(ValueError, match="not a text FASTA"):
        read_fasta(tmp_path / "bin.fa")
    # gzip, lower case and a final stop codon are fine
    with gzip.open(tmp_path / "ok.fa.gz", "wt") as f:
        f.write(">x desc here\nmkv\nLL*\n")
    (rec,) = read_fasta(tmp_path / "ok.fa.gz")
    assert rec.id == "x" and rec.description == "x desc here" and rec.sequence == "MKVLL"


def test_the_alphabet_is_esm2s() -> None:
    assert len(ALPHABET) == 33
    assert (CLS, PAD, EOS, UNK, MASK) == (0, 1, 2, 3, 32)
    assert "".join(ALPHABET[4:24]) == "LAGVSERTIDPKQNFYMHWC"  # ESM's 20 standard residues, in its order
    t = encode("MKVxB")
    assert t[0] == CLS and t[-1] == EOS and decode(t) == "MKVXB"
    with pytest.raises(ValueError, match="'1'"):
        encode("MK1")


def test_crops_are_windows_of_the_sequence_that_vary_with_the_epoch() -> None:
    seq = encode("ACDEFGHIKLMNPQRSTVWY" * 10)  # 200 residues
    assert len(crop(seq, 500, epoch_rng(0, 0, 1))) == 202  # short enough: untouched
    windows = set()
    for epoch in range(20):
        c = crop(seq, 50, epoch_rng(0, epoch, 7))
        assert len(c) == 50 and c[0] == CLS and c[-1] == EOS
        inner = decode(c)
        assert inner in decode(seq)
        windows.add(inner)
    assert len(windows) > 5
    np.testing.assert_array_equal(crop(seq, 50, epoch_rng(3, 1, 7)), crop(seq, 50, epoch_rng(3, 1, 7)))


def test_batches_hold_every_sequence_once_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, 1000)
    b = TokenBatches(lengths, budget=2048, seed=5)
    batches = b.batches(0)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(len(b.batches(e)) == len(batches) == len(b) for e in range(5))  # a known epoch length
    for idx in batches:
        assert lengths[idx].max() * len(idx) <= 2048
    padded = sum(lengths[idx].max() * len(idx) for idx in batches)
    assert lengths.sum() / padded > 0.9  # bucketing keeps padding small
    # a pure function of (seed, epoch): the same again, another epoch differs, a resumed epoch is its tail
    assert all(np.array_equal(x, y) for x, y in zip(batches, b.batches(0), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(batches, b.batches(1), strict=False))
    full = list(b.epoch(2))
    tail = list(b.epoch(2, start=7))
    assert all(np.array_equal(x, y) for x, y in zip(full[7:], tail, strict=True))
    # two ranks split the same batches between them, equally
    r0 = list(TokenBatches(lengths, 2048, seed=5, rank=0, world_size=2).epoch(0))
    r1 = list(TokenBatches(lengths, 2048, seed=5, rank=1, world_size=2).epoch(0))
    assert len(r0) == len(r1) and len(r0) * 2 >= len(batches) - 1
    assert not set(np.concatenate(r0).tolist()) & set(np.concatenate(r1).tolist())
    with pytest.raises(ValueError, match="below the longest"):
        TokenBatches(lengths, budget=100)


def test_masking_follows_esms_80_10_10_rule() -> None:
    rng = np.random.default_rng(1)
    seqs = [encode("".join(rng.choice(list("LAGVSERTIDPKQNFYMHWC"), n))) for n in rng.integers(50, 300, 400)]
    tokens = pad_batch(seqs)
    inputs, labels = mask_tokens(tokens, torch.Generator().manual_seed(0))
    residue = tokens >= 4
    chosen = labels != -100
    n_res = int(residue.sum())
    assert not (chosen & ~residue).any()  # never <cls>, <eos> or <pad>
    frac = int(chosen.sum()) / n_res
    assert abs(frac - 0.15) < 4 * (0.15 * 0.85 / n_res) ** 0.5
    torch.testing.assert_close(labels[chosen], tokens[chosen])
    n = int(chosen.sum())
    masked = int((inputs[chosen] == MASK).sum()) / n
    kept = int((inputs[chosen] == tokens[chosen]).sum()) / n
    assert (
        abs(masked - 0.8) < 0.02 and abs(kept - (0.1 + 0.1 / 20)) < 0.02
    )  # a random residue may be the same
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    assert ((inputs[chosen] >= 4) & (inputs[chosen] < 24) | (inputs[chosen] == MASK)).all()
    a, _ = mask_tokens(tokens, torch.Generator().manual_seed(9))
    b, _ = mask_tokens(tokens, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_whole_proteomes_are_held_out(proteomes: list[Path]) -> None:
    assert len(proteomes) == 4
    train, val = split_proteomes(proteomes, ECOLI)
    assert set(val.source) == {ECOLI} and ECOLI not in set(train.source)
    assert len(val) == 4401 and len(train) + len(val) == len(load_corpus(proteomes))
    train_seqs = {t.tobytes() for t in train.tokens}
    shared = sum(t.tobytes() in train_seqs for t in val.tokens)
    assert shared < 0.01 * len(val)  # another organism: almost no identical protein
    ppl = unigram_perplexity(train, val)
    assert 15.0 < ppl < 20.0  # below uniform over 20 residues, as the README's 17.9 for E. coli
    with pytest.raises(ValueError, match="not among"):
        split_proteomes(proteomes, "other.fasta")
