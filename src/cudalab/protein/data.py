"""Protein sequences for masked-language-model pretraining: FASTA, the ESM alphabet, crops, batches.

- :func:`read_fasta` reads FASTA (plain or gzip) strictly: a file that does not start with a
  header, a character that is no amino-acid code, or a record without a sequence is a
  ``ValueError`` naming the file, the line and the fault (a stop ``*`` at a sequence's end is dropped);
- :data:`ALPHABET` is ESM-2's, token for token (33: ``<cls> <pad> <eos> <unk>``, the 25 residue
  codes, ``. -``, ``<null_1>``, ``<mask>``), so ESM-2 checkpoints fit the embedding and the head;
- :func:`crop` cuts a sequence longer than the model's context to a random window, as ESM-2's
  training did (a window of ``max_len - 2`` residues between ``<cls>`` and ``<eos>``);
- :class:`TokenBatches` groups sequences of similar length into batches whose padded size stays
  within a token budget, and spreads them over ranks;
- :func:`mask_tokens` applies ESM's masking rule: 15 % of the residues are chosen, of which 80 %
  become ``<mask>``, 10 % a random residue and 10 % stay.

Everything random is a pure function of ``(seed, epoch)`` (and a sequence's index), so an epoch's
batches, crops and masks are rebuilt exactly on resume, from any batch.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

#: ESM-2's alphabet (``esm.data.Alphabet.from_architecture("ESM-1b")``), in its order.
ALPHABET: tuple[str, ...] = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-",
    "<null_1>", "<mask>",
)  # fmt: skip
CLS, PAD, EOS, UNK, MASK = 0, 1, 2, 3, 32
#: The 20 standard residues' tokens, ``[STANDARD_FIRST, STANDARD_END)``: what a chosen position may be
#: replaced with at random.
STANDARD_FIRST, STANDARD_END = 4, 24
_CODE = np.full(256, -1, dtype=np.int64)
for _i, _tok in enumerate(ALPHABET):
    if len(_tok) == 1:
        _CODE[ord(_tok)] = _i
        _CODE[ord(_tok.lower())] = _i


@dataclass(frozen=True, slots=True)
class Record:
    """One FASTA record: its identifier (the header's first word), the header, and the residues."""

    id: str
    description: str
    sequence: str


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.open("rb")
    magic = raw.read(2)
    raw.seek(0)
    stream = gzip.open(raw) if magic == b"\x1f\x8b" else raw  # noqa: SIM115  (closed by the wrapper)
    return io.TextIOWrapper(stream, encoding="ascii", errors="strict")


def read_fasta(path: str | Path) -> list[Record]:
    """Every record of a FASTA file (see the module for what is refused)."""
    p = Path(path)
    records: list[Record] = []
    header: str | None = None
    header_line = 0
    parts: list[str] = []

    def close() -> None:
        if header is None:
            return
        seq = "".join(parts)
        if seq.endswith("*"):
            seq = seq[:-1]
        if not seq:
            raise ValueError(
                f"{p}: line {header_line}: record {header.split()[0] if header else '?'} has no sequence"
            )
        records.append(Record(id=header.split()[0] if header else "", description=header, sequence=seq))

    try:
        with _open_text(p) as fh:
            for n, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                if line.startswith(">"):
                    close()
                    header, header_line, parts = line[1:].strip(), n, []
                    continue
                if header is None:
                    raise ValueError(f"{p}: line {n}: sequence before any '>' header (not FASTA)")
                codes = _CODE[np.frombuffer(line.encode("ascii"), dtype=np.uint8)]
                bad = np.flatnonzero(codes < 0)
                if len(bad) and not (line.endswith("*") and bad.tolist() == [len(line) - 1]):
                    ch = line[int(bad[0])]
                    raise ValueError(f"{p}: line {n}: {ch!r} is not an amino-acid code")
                parts.append(line.upper())
            close()
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text FASTA file (non-ASCII bytes)") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{p}: cannot read it ({exc})") from None
    if not records:
        raise ValueError(f"{p}: no FASTA records")
    return records


def encode(sequence: str) -> NDArray[np.int64]:
    """``<cls>`` + the residues' tokens + ``<eos>`` (upper or lower case; any other letter is an error)."""
    codes = _CODE[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]
    if (codes < 0).any():
        raise ValueError(f"{sequence[int(np.flatnonzero(codes < 0)[0])]!r} is not an amino-acid code")
    return np.concatenate([[CLS], codes, [EOS]]).astype(np.int64)


def decode(tokens: Sequence[int] | NDArray[np.int64]) -> str:
    """The residues of a token sequence (special tokens left out)."""
    return "".join(ALPHABET[int(t)] for t in tokens if len(ALPHABET[int(t)]) == 1)


def crop(tokens: NDArray[np.int64], max_len: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """``tokens`` (with ``<cls>`` and ``<eos>``) cut to at most ``max_len``: a random window of
    ``max_len - 2`` residues between the two specials when the sequence is longer."""
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3, not {max_len}")
    if len(tokens) <= max_len:
        return tokens
    residues = tokens[1:-1]
    start = int(rng.integers(0, len(residues) - (max_len - 2) + 1))
    return np.concatenate([[CLS], residues[start : start + max_len - 2], [EOS]])


@dataclass(frozen=True)
class Corpus:
    """Tokenised sequences (``<cls>`` ... ``<eos>``) and the file each came from."""

    tokens: list[NDArray[np.int64]]
    source: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def residues(self) -> int:
        return sum(len(t) - 2 for t in self.tokens)


def load_corpus(paths: Sequence[str | Path]) -> Corpus:
    """The sequences of several FASTA files, in file order."""
    tokens, source = [], []
    for path in paths:
        for r in read_fasta(path):
            tokens.append(encode(r.sequence))
            source.append(Path(path).name)
    return Corpus(tokens, source)


def split_proteomes(paths: Sequence[str | Path], validate: str | Path) -> tuple[Corpus, Corpus]:
    """Train on every file but ``validate`` (a path or a file name among ``paths``), validate on it:
    whole proteomes held out, no sequence of the validation organism seen in training."""
    names = [Path(p).name for p in paths]
    target = Path(validate).name
    if target not in names:
        raise ValueError(f"{validate}: not among the FASTA files ({', '.join(names)})")
    if len(paths) < 2:
        raise ValueError("need at least two proteomes: one to train on, one to validate on")
    train = [p for p, n in zip(paths, names, strict=True) if n != target]
    val = [p for p, n in zip(paths, names, strict=True) if n == target]
    return load_corpus(train), load_corpus(val)


def unigram_perplexity(train: Corpus, val: Corpus) -> float:
    """The perplexity of ``val``'s residues under the residue frequencies of ``train`` (add-one
    smoothed): the baseline a language model must beat."""
    counts = np.bincount(np.concatenate([t[1:-1] for t in train.tokens]), minlength=len(ALPHABET)) + 1.0
    counts[[CLS, PAD, EOS, UNK, MASK]] = 0.0
    logp = np.log(counts / counts.sum(), where=counts > 0, out=np.full(len(ALPHABET), -np.inf))
    v = np.concatenate([t[1:-1] for t in val.tokens])
    return float(math.exp(-logp[v].mean()))


def epoch_rng(seed: int, epoch: int, *keys: int) -> np.random.Generator:
    """The generator of one draw of an epoch (a crop, a mask, the order): a pure function of its keys."""
    return np.random.default_rng([seed, epoch, *keys])


class TokenBatches:
    """Batches of sequences of similar length, each at most ``budget`` tokens once padded.

    Per epoch: the sequences are shuffled, cut into windows of ``bucket`` batches' worth, sorted by
    length within a window (so a batch pads little but every epoch mixes differently), packed
    greedily into batches within the budget, and the batches shuffled. Rank ``r`` of ``W`` takes
    batches ``r, r + W, ...``; every rank gets the same count, and every epoch (see :meth:`batches`).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        budget: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        bucket: int = 64,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if budget < int(self.lengths.max(initial=0)):
            raise ValueError(
                f"token budget {budget} is below the longest (cropped) sequence, {self.lengths.max()}"
            )
        self.budget, self.seed, self.bucket = budget, seed, bucket
        self.rank, self.world_size = rank, world_size
        self.per_rank = len(self._pack(0)) // world_size

    def batches(self, epoch: int) -> list[NDArray[np.int64]]:
        """Every rank's batches of ``epoch`` (index arrays), in order, before the split over ranks:
        the same number every epoch (epoch 0's; packing another epoch may give a few more, dropped
        at random, or fewer, made up from its first batches again), so that an epoch's length is known."""
        out = self._pack(epoch)
        target = self.per_rank * self.world_size
        while len(out) < target:
            out = out + out[: target - len(out)]
        return out[:target]

    def _pack(self, epoch: int) -> list[NDArray[np.int64]]:
        rng = epoch_rng(self.seed, epoch, 0)
        order = rng.permutation(len(self.lengths))
        mean = max(1.0, float(self.lengths.mean())) if len(self.lengths) else 1.0
        window = max(1, int(self.bucket * self.budget / mean))
        out: list[NDArray[np.int64]] = []
        for w in range(0, len(order), window):
            chunk = order[w : w + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            start, longest = 0, 0
            for k, i in enumerate(chunk):
                longest_next = max(longest, int(self.lengths[i]))
                if longest_next * (k - start + 1) > self.budget:
                    out.append(chunk[start:k])
                    start, longest_next = k, int(self.lengths[i])
                longest = longest_next
            if start < len(chunk):
                out.append(chunk[start:])
        perm = rng.permutation(len(out))
        return [out[j] for j in perm]

    def __len__(self) -> int:
        """Batches per rank, in every epoch."""
        return self.per_rank

    def epoch(self, epoch: int, start: int = 0) -> Iterator[NDArray[np.int64]]:
        """This rank's batches of ``epoch`` from its batch ``start`` on."""
        mine = self.batches(epoch)[self.rank :: self.world_size]
        yield from mine[start:]


def pad_batch(seqs: Sequence[NDArray[np.int64]]) -> torch.Tensor:
    """``(B, L)`` int64 tokens, ``<pad>`` after each sequence's ``<eos>``."""
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), PAD, dtype=torch.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(s)
    return out


def mask_tokens(
    tokens: torch.Tensor, generator: torch.Generator, *, rate: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """ESM's rule: of the residue positions (never ``<cls> <eos> <pad>``), ``rate`` are chosen; of
    those 80 % become ``<mask>``, 10 % a random standard residue, 10 % stay. Returns the inputs and
    the labels (the original token where chosen, -100 elsewhere)."""
    residue = tokens >= 4
    residue &= tokens != MASK
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    chosen = residue & (u < rate)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    v = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    inputs = tokens.clone()
    inputs[chosen & (v < 0.8)] = MASK
    swap = chosen & (v >= 0.8) & (v < 0.9)
    random_res = torch.randint(
        STANDARD_FIRST, STANDARD_END, tokens.shape, generator=generator, device=tokens.device
    )
    inputs[swap] = random_res[swap]
    return inputs, labels
