"""Zeroscope v2: text-to-video (576w) and the XL video-to-video second pass."""
