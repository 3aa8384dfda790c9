"""``python -m comfyui_webtv``: the pack's engines without ComfyUI."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
