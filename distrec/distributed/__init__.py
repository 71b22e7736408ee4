"""Everything that knows about torch.distributed: process group, sharding, checkpoints.

Models under ``distrec/models`` never import torch.distributed; the engine applies parallelism here.
"""
