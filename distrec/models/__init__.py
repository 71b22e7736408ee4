"""Single-device model code. No torch.distributed here: sharding lives in distrec.distributed."""
