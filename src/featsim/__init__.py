"""featsim: do two language models learn the same features? SAE feature-space similarity across LLMs."""

__version__ = "0.1.0"
