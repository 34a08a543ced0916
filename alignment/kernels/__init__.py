"""How a model runs fast on this machine: the runtime plan (runtime_plan) and what it switches — CPU attention,
memory-lean RMSNorm/MLP, oneDNN products, the chunked LM head — and the allocator settings (host_memory).
Nothing here imports training code."""
