"""Training under SWAA: self-distilled SFT data (the full-attention model answers), the SFT data pipeline, LoRA SFT."""
