"""Pieces every stage shares: the model cache, Hub downloads, IMAGE/AUDIO helpers and ffmpeg."""
