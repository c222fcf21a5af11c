"""llmbench: honest latency and throughput numbers for LLM inference with Hugging Face generate."""
__version__ = "0.1.0"
