"""The denoising loop and schedulers shared by the video stages (Zeroscope, StreamingT2V, randomized blending)."""
