"""Process launching: start a Python entry point in N processes (`torchrun` on CPU, `accelerate launch` on
CUDA) in a process group of its own, call back while it runs, stop the whole group on failure, and keep the
tail of its stderr for the error message.

The launcher knows nothing of training: the caller hands it the entry point (a module and its arguments)
and a callback (alignment/training/distributed.py forwards the metrics rank 0 writes).
"""
