"""Training: token shards and masking, the multimodal transformer trainer, and codec (tokenizer) training."""
