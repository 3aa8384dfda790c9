"""MusicGen: music of any length from a prompt, fitted to a video and muxed into the mp4."""
