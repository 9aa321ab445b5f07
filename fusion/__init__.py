"""lmfusion: language-model fusion for ASR and MT decoding."""
