"""Models: loading a causal LM and its tokenizer (loading), where its weights come from — hub id, folder, S3,
GGUF file (source) — the tiny offline model of the quickstart and tests (tiny), and batched generation (generation)."""
