"""Shot writing: a theme in, consistent text-to-video prompts out (LLM endpoint, local LM or template)."""
