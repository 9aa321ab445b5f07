"""Phoneme-to-text seq2seq recipe: train on technical documentation, fuse bible-domain LMs at test time."""
