"""StreamingT2V: extend videos chunk by chunk (CAM + APM) and enhance them with randomized blending."""
