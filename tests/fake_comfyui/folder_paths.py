"""Stand-in for ComfyUI's folder_paths: models, output and temp folders under $FAKE_COMFYUI_BASE."""

import os

base_path = os.environ["FAKE_COMFYUI_BASE"]
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict = {}


def get_folder_paths(name):
    return list(folder_names_and_paths.get(name, ([os.path.join(models_dir, name)], set()))[0])


def get_output_directory():
    return os.path.join(base_path, "output")


def get_temp_directory():
    return os.path.join(base_path, "temp")
