"""Data: dataset sources (synthetic, CUB, Flowers) → decode-once cache → tokenizer → one LightningDataModule."""
