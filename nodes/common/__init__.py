"""Pieces every stage shares: the model cache, IMAGE/AUDIO helpers and ffmpeg."""
