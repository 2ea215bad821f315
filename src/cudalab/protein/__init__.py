"""Protein language-model pretraining (issue 17): FASTA data, the ESM alphabet, batches to a token budget."""
