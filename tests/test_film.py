"""FILM model and weight files: official key set, release formats, converter, strict loading, errors."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfyui_webtv.cli import main as cli_main
from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.film import tiny, weights
from comfyui_webtv.nodes.film.interpolate import run_model
from comfyui_webtv.nodes.film.model import FilmConfig, FilmNet, warp

# Shapes from the released film_net_fp32.pt (film.md sections 5-9).
OFFICIAL_SHAPES = {
    "extract.extract_sublevels.convs.0.0.0.weight": (64, 3, 3, 3),
    "extract.extract_sublevels.convs.3.1.0.weight": (512, 512, 3, 3),
    "predict_flow._predictor._convs.0.0.weight": (256, 1920, 3, 3),
    "predict_flow._predictor._convs.4.0.weight": (2, 128, 1, 1),
    "predict_flow._predictors.0._convs.0.0.weight": (128, 896, 3, 3),
    "predict_flow._predictors.1._convs.0.0.weight": (64, 384, 3, 3),
    "predict_flow._predictors.2._convs.0.0.weight": (32, 128, 3, 3),
    "predict_flow._predictors.2._convs.4.0.weight": (2, 16, 1, 1),
    "fuse.convs.0.0.0.weight": (512, 1930, 2, 2),
    "fuse.convs.0.1.0.weight": (512, 2442, 3, 3),
    "fuse.convs.1.1.0.weight": (256, 1162, 3, 3),
    "fuse.convs.2.1.0.weight": (128, 522, 3, 3),
    "fuse.convs.3.0.0.weight": (64, 128, 2, 2),
    "fuse.convs.3.1.0.weight": (64, 202, 3, 3),
    "fuse.output_conv.weight": (3, 64, 1, 1),
    "fuse.output_conv.bias": (3,),
}


@pytest.fixture(scope="module")
def film_files(tmp_path_factory) -> dict[str, str]:
    """Random-weight FILM in every release format: TorchScript fp32/fp16 (v1.0.2 honours t, v1.0.0 ignores it)."""
    root = tmp_path_factory.mktemp("film_release")
    files = {}
    for tag, honours_t in (("v1.0.2", True), ("v1.0.0", False)):
        model = tiny.random_model(honours_t=honours_t, seed=1)
        os.makedirs(root / tag)
        for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            if tag == "v1.0.0" and precision == "fp16":
                continue
            path = str(root / tag / f"film_net_{precision}.pt")
            files[f"{tag}/{precision}"] = tiny.save_torchscript(path, model, dtype)
    return files


@pytest.fixture(scope="module")
def converted(film_files, tmp_path_factory) -> dict[str, str]:
    """Each archive converted once by the converter (which probes whether the model honours t)."""
    root = tmp_path_factory.mktemp("film_converted")
    return {name: weights.convert(path, str(root / (name.replace("/", "_") + ".safetensors"))) for name, path in film_files.items()}


@pytest.fixture(scope="module")
def frames_pair():
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 2, 3, 64, 64, generator=g)


def test_default_config_reproduces_the_official_state_dict():
    with torch.device("meta"):
        state = FilmNet().state_dict()
    assert len(state) == 82
    assert sum(v.numel() for v in state.values()) == 34_436_667
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert all(k.endswith(".0.weight") or k.endswith(".0.bias") for k in state if not k.startswith("fuse.output_conv"))


def test_tiny_config_keeps_the_official_names():
    assert set(tiny.random_model().state_dict()) == set(weights.official_keys())
    assert weights.config_from_shapes(tiny.random_model().state_dict()) == tiny.TINY_CONFIG


def test_release_archives_are_torchscript_with_the_official_keys(film_files):
    for name, path in film_files.items():
        assert weights.is_torchscript(path), name
        with zipfile.ZipFile(path) as z:
            assert any("/code/" in n for n in z.namelist())
        state = torch.jit.load(path, map_location="cpu").state_dict()
        assert set(state) == set(weights.official_keys()), name
        expected = torch.float16 if name.endswith("fp16") else torch.float32
        assert all(v.dtype == expected for v in state.values()), name
        model = weights.build(state)  # strict=True inside
        assert not model.training and next(model.parameters()).dtype == torch.float32


def test_plain_torch_load_refuses_the_release_format(film_files):
    with pytest.raises(Exception):
        torch.load(film_files["v1.0.2/fp32"], weights_only=True)


@pytest.mark.parametrize("name", ["v1.0.2/fp32", "v1.0.2/fp16", "v1.0.0/fp32"])
def test_converter_round_trips_exactly(film_files, converted, name):
    src, dst = film_files[name], converted[name]
    original = torch.jit.load(src, map_location="cpu").state_dict()
    with safe_open(dst, framework="pt") as f:
        assert set(f.keys()) == set(original)
        for key in f.keys():
            tensor = f.get_tensor(key)
            assert tensor.dtype == original[key].dtype and torch.equal(tensor, original[key]), key
        metadata = f.metadata()
    assert metadata["format"] == "film_net" and metadata["source"] == os.path.basename(src)
    assert metadata["time_input"] == ("ignored" if name.startswith("v1.0.0") else "honoured")
    assert not [p for p in os.listdir(os.path.dirname(dst)) if p.startswith(".")]  # no temp file left behind


@pytest.mark.parametrize("name", ["v1.0.2/fp32", "v1.0.0/fp32"])
def test_converted_model_matches_the_torchscript_model(film_files, converted, name, frames_pair):
    script = torch.jit.load(film_files[name], map_location="cpu")
    eager = weights.load_file(converted[name])
    x0, x1 = frames_pair
    t = torch.tensor([[0.5], [0.3]])
    with torch.no_grad():
        assert torch.allclose(eager(x0, x1, t), script(x0, x1, t), atol=1e-5)
        early, late = eager(x0, x1, torch.full((2, 1), 0.25)), eager(x0, x1, torch.full((2, 1), 0.75))
    assert eager.honours_t == (not torch.equal(early, late))
    assert eager.honours_t == name.startswith("v1.0.2")


def test_fp16_file_loads_into_the_same_model(converted, frames_pair):
    fp32 = weights.load_file(converted["v1.0.2/fp32"])
    fp16 = weights.load_file(converted["v1.0.2/fp16"])
    for (k, a), b in zip(fp32.state_dict().items(), fp16.state_dict().values()):
        assert torch.equal(a.half().float(), b), k
    x0, x1 = frames_pair[:, :1]
    with torch.no_grad():
        assert (fp32(x0, x1, torch.full((1, 1), 0.5)) - fp16(x0, x1, torch.full((1, 1), 0.5))).abs().max() < 2e-2


def test_convert_command(film_files, tmp_path, capsys):
    dst = str(tmp_path / "film_net_fp32.safetensors")
    with pytest.raises(SystemExit, match="outside the FILM model folder.*executes code.*--force"):
        cli_main(["convert-film", film_files["v1.0.2/fp32"], dst])  # film_files lie outside models/film
    assert not os.path.exists(dst)
    assert cli_main(["convert-film", film_files["v1.0.2/fp32"], dst, "--time-input", "ignored", "--force"]) == 0
    out = capsys.readouterr().out
    assert "82 tensors" in out and "t ignored" in out
    assert weights.load_file(dst).honours_t is False  # the declared behaviour overrides the probe


def test_convert_command_takes_files_in_the_models_folder(film_files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    os.makedirs(tmp_path / "film")
    src = str(tmp_path / "film" / "film_net_fp32.pt")
    with open(film_files["v1.0.2/fp32"], "rb") as f, open(src, "wb") as g:
        g.write(f.read())
    assert cli_main(["convert-film", src]) == 0
    assert "t honoured" in capsys.readouterr().out
    assert os.path.isfile(str(tmp_path / "film" / "film_net_fp32.safetensors"))
    link = str(tmp_path / "film" / "elsewhere.pt")
    os.symlink(film_files["v1.0.2/fp32"], link)  # a link out of the folder is outside too
    with pytest.raises(SystemExit, match="--force"):
        cli_main(["convert-film", link])


def test_plain_state_dict_checkpoints_convert_with_a_declared_time_input(tmp_path):
    src = str(tmp_path / "film_state.pt")
    torch.save(tiny.random_model().state_dict(), src)
    with pytest.raises(ValueError, match="time_input"):
        weights.convert(src)
    assert weights.load_file(weights.convert(src, time_input="honoured")).honours_t


def test_sizes_that_are_not_multiples_of_64_are_padded_and_cropped():
    model = tiny.random_model(seed=2)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(2, 1, 3, 50, 70, generator=g)
    t = torch.full((1, 1), 0.4)
    out = run_model(model, x0, x1, t)
    assert out.shape == (1, 3, 50, 70) and out.min() >= 0 and out.max() <= 1
    # Padding goes to 64 x 128, split evenly: 7 rows above, 29 columns left.
    pad = [29, 29, 7, 7]
    with torch.no_grad():
        full = model(torch.nn.functional.pad(x0, pad), torch.nn.functional.pad(x1, pad), t)
    assert torch.equal(out, full[..., 7:57, 29:99].clamp(0, 1))
    assert run_model(model, *torch.rand(2, 1, 3, 97, 131, generator=g), torch.rand(1, 1)).shape == (1, 3, 97, 131)


def test_half_precision_samples_on_an_fp32_grid(frames_pair):
    stripes = (torch.arange(1024) % 2).to(torch.bfloat16).expand(1, 1, 4, 1024)  # columns 0, 1, 0, 1, ...
    flow = torch.zeros(1, 2, 4, 1024, dtype=torch.bfloat16)
    flow[:, 0] = 0.25  # a quarter pixel: lost in bf16 positions near x = 1000 (spacing 4), kept in fp32
    out = warp(stripes, flow)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[0, 0, 0, 900:1000:2], torch.full((50,), 0.25, dtype=torch.bfloat16))
    assert torch.equal(out[0, 0, 0, 901:1001:2], torch.full((50,), 0.75, dtype=torch.bfloat16))
    model = tiny.random_model(seed=2)
    x0, x1 = frames_pair[:, :1]
    t = torch.full((1, 1), 0.5)
    reference = run_model(model, x0, x1, t)
    low = run_model(model.to(torch.bfloat16), x0, x1, t)
    assert low.dtype == torch.float32 and (low - reference).abs().max() < 0.1


def test_pair_of_different_sizes_is_refused():
    with pytest.raises(ValueError, match="differ in size"):
        run_model(tiny.random_model(), torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 32), torch.rand(1, 1))


# ---------------------------------------------------------------- errors

def test_missing_weights_name_the_file_folder_and_download(tmp_path, monkeypatch):
    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        weights.find("film_net_fp32.safetensors")
    message = str(e.value)
    assert "film_net_fp32.safetensors" in message and os.path.join(str(tmp_path), "film") in message
    assert "releases/download/v1.0.2/film_net_fp32.pt" in message and "convert-film" in message


def test_torchscript_at_run_time_asks_for_conversion(film_files, tmp_path, monkeypatch):
    os.makedirs(tmp_path / "film")
    os.link(film_files["v1.0.2/fp32"], tmp_path / "film" / "film_net_fp32.pt")
    monkeypatch.setitem(host._standalone, "models", str(tmp_path))
    with pytest.raises(ValueError, match="convert-film"):
        weights.find("film_net_fp32.pt")


def test_corrupt_weight_files_give_clear_errors(converted, tmp_path):
    good = converted["v1.0.2/fp32"]
    truncated = str(tmp_path / "truncated.safetensors")
    with open(good, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[: os.path.getsize(good) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        weights.load_file(truncated)
    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="does not hold FILM"):
        weights.load_file(foreign)
    wrong_width = tiny.random_model().state_dict()
    wrong_width["fuse.output_conv.weight"] = torch.zeros(3, 5, 1, 1)
    save_file(wrong_width, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="size mismatch"):
        weights.load_file(str(tmp_path / "wrong.safetensors"))
    garbage = str(tmp_path / "film_net_fp32.pt")
    with open(garbage, "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(ValueError, match="Download"):
        weights.convert(garbage)
    assert not os.path.exists(str(tmp_path / "film_net_fp32.safetensors"))


def test_full_width_config_runs(frames_pair):
    """The default (release) widths run end to end on a small frame."""
    model = FilmNet(FilmConfig()).eval()
    with torch.no_grad():
        out = model(frames_pair[0][:1], frames_pair[1][:1], torch.full((1, 1), 0.5))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
