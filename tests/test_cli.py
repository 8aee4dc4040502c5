"""The command line: catalogues, conversion of users' files, and one-line errors on bad input."""

from __future__ import annotations

import pickle
import re
import zipfile

import numpy as np
import pytest

from jaxvis.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_prints_computed_catalogues(capsys):
    code, out, _ = run(capsys, "layers", "--model", "vgg19")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["conv1_1"][3:6] == ["3", "1", "3"] and rows["conv3_1"][3:6] == ["24", "4", "24"]
    for model in ("vgg16", "resnet50", "efficientnet-lite0"):
        code, out, _ = run(capsys, "layers", "--model", model)
        assert code == 0 and len(out.splitlines()) > 10
    code, out, _ = run(capsys, "layers", "--model", "resnet50", "--variant", "v1")
    assert code == 0 and "layer4.2" in out


def test_layers_option_errors_are_one_line(capsys):
    code, _, err = run(capsys, "layers", "--model", "resnet50", "--padding", "SAME")
    assert code == 2 and err.count("\n") == 1 and "has no option padding" in err
    with pytest.raises(SystemExit):  # argparse lists the valid models
        main(["layers", "--model", "alexnet"])
    assert "invalid choice: 'alexnet'" in capsys.readouterr().err


def write_legacy_like(path):
    """A zip-format torch file whose pickle asks for os.system (crafted by hand, no torch)."""
    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {path.parent / 'pwned'}",)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))


def test_convert_refuses_bad_files_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(tmp_path / "cache"))
    evil = tmp_path / "evil.pth"
    write_legacy_like(evil)
    code, _, err = run(capsys, "convert", "--from", str(evil), "--model", "vgg19")
    assert code == 2 and "os.system" in err.replace("posix.system", "os.system") and err.count("\n") == 1
    assert not (tmp_path / "pwned").exists()

    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    code, _, err = run(capsys, "convert", "--from", str(junk))
    assert code == 2 and "junk.pth" in err and err.count("\n") == 1

    code, _, err = run(capsys, "convert", "--from", str(tmp_path / "missing.pth"))
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "cache").exists()  # nothing written on failure


def test_convert_wrong_architecture_and_truncated(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("JAXVIS_WEIGHTS", str(tmp_path / "cache"))
    conv = torch.nn.Conv2d(3, 64, 3)
    path = tmp_path / "tiny.pth"
    torch.save({"conv1_1.weight": conv.weight, "conv1_1.bias": conv.bias}, path)
    code, _, err = run(capsys, "convert", "--from", str(path), "--model", "resnet50")
    assert code == 2 and "does not look like a resnet50 file" in err and err.count("\n") == 1
    code, _, err = run(capsys, "convert", "--from", str(path), "--source", "gatys-vgg19")
    assert code == 2 and "has no tensor 'conv1_2.weight'" in err
    cut = tmp_path / "cut.pth"
    torch.save({"w": torch.ones(1000)}, cut, _use_new_zipfile_serialization=False)
    cut.write_bytes(cut.read_bytes()[:-1000])
    code, _, err = run(capsys, "convert", "--from", str(cut))
    assert code == 2 and "truncated" in err and err.count("\n") == 1
    assert not (tmp_path / "cache").exists()


def test_convert_caches_a_users_file(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from tests.models.test_vgg import gatys_state, torch_vgg

    monkeypatch.setenv("JAXVIS_WEIGHTS", str(tmp_path / "cache"))
    path = tmp_path / "vgg_conv.pth"
    torch.save(gatys_state(torch_vgg(19, 1, False)), path)
    code, out, _ = run(capsys, "convert", "--from", str(path), "--name", "mine")
    assert code == 0 and "mine" in out
    code, out, _ = run(capsys, "weights", "list")
    assert "mine" in out and "gatys-vgg19" in out
    assert out.splitlines()[1].split() == ["name", "model", "source", "normalised"]  # a header row
    code, out, _ = run(capsys, "layers", "--weights", "mine")
    assert code == 0 and "conv5_4" in out


@pytest.mark.parametrize("flag, value", [("--patience", "-1"), ("--patience", "0"), ("--lambda", "-1"),
                                         ("--lambda", "nan"), ("--chunk", "0"), ("--chunk", "-1"),
                                         ("--images", "100000"), ("--lr", "inf"), ("--beta", "-2")])
def test_bad_sweep_values_are_refused_before_any_work(flag, value, capsys, monkeypatch):
    import jaxvis.weights

    monkeypatch.setattr(jaxvis.weights, "load", lambda *a, **k: pytest.fail("weights loaded"))
    assert main(["sweep", "--weights", "vgg19", "--layer", "conv1_1", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jaxvis: error: {flag} must be")


@pytest.mark.parametrize("flag, value", [("--shift-steps", "0"), ("--shift-lr", "nan"), ("--top", "0"),
                                         ("--shift-weight-min", "2"), ("--shift-stride", "0"),
                                         ("--shift-batch", "-1"), ("--shift-final-lr", "1.5")])
def test_bad_analyze_values_are_refused_in_one_line(flag, value, tmp_path, capsys, monkeypatch):
    """AnalysisConfig checks its own fields; the CLI names the flag, before the photos or the file."""
    import jaxvis.weights

    monkeypatch.setattr(jaxvis.weights, "default_photos", lambda *a, **k: pytest.fail("photos looked up"))
    assert main(["analyze", str(tmp_path / "x.h5"), flag, value]) == 2  # before the file is looked at
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jaxvis: error: {flag} must be") and f"not {value}" in err


@pytest.mark.parametrize("field, value, what", [
    ("shift_steps", 0, "a positive number of steps"), ("shift_steps", 2.5, "a positive number of steps"),
    ("shift_stride", 0, "a positive integer"), ("shift_lr", float("inf"), "a finite number > 0"),
    ("shift_weight_min", -0.1, "a number from 0 to 1"), ("shift_batch", -1, "0 (all offsets) or a positive integer"),
    ("shift_final_lr", 2.0, "a number from 0 to 1"), ("top", 0, "a positive number of patches"),
    ("top", True, "a positive number of patches")])
def test_analysis_config_refuses_bad_numbers_naming_the_field(field, value, what):
    from jaxvis.errors import JaxvisError
    from jaxvis.run.analyze import AnalysisConfig

    with pytest.raises(JaxvisError, match=rf"^AnalysisConfig\.{field} must be {re.escape(what)}, not "):
        AnalysisConfig(**{field: value})
    AnalysisConfig(shift_batch=0, shift_weight_min=1.0, shift_final_lr=0.0, top=1)  # the edges are valid


def test_a_sweep_onto_foreign_results_says_the_flags(tmp_path, capsys, monkeypatch):
    """The results writer's refusal names sweep(overwrite) and sweep(out); the command line
    prints --overwrite and --out, in one line, and leaves the file alone."""
    import jaxvis.weights
    from jaxvis.run import sweep as sweep_module
    from tests.models.test_own_network import Tiny, model

    net = model(Tiny())
    monkeypatch.setattr(jaxvis.weights, "load", lambda *a, **k: net)
    monkeypatch.setattr(sweep_module, "plan", lambda *a, **k: [])  # no contrast budget: no photos needed
    foreign = tmp_path / "notes.h5"
    foreign.write_bytes(b"my thesis, no backup")
    code, _, err = run(capsys, "sweep", "--layer", "b", "--out", str(foreign), "--no-cache", "--no-render")
    assert code == 2 and err.count("\n") == 1, err
    assert err == (f"jaxvis: error: {foreign} exists and is not a jaxvis results file (not HDF5); "
                   "use --overwrite or another --out\n")
    assert foreign.read_bytes() == b"my thesis, no backup"


def test_too_few_natural_patches_says_the_flags(tmp_path, capsys, monkeypatch):
    """The natural calibration names AnalysisConfig.top and AnalysisConfig.photos; the command
    line prints --top and --images, in one line."""
    from PIL import Image

    from jaxvis.analysis.natural import calibrate
    from jaxvis.run import analyze as analyze_module
    from tests.models.test_own_network import Tiny, model

    net = model(Tiny())
    info = net.network.layer("b")  # a 5 px canvas: 16 patches of a 12 px photo
    monkeypatch.setattr(analyze_module, "analyze", lambda path, config, **_: calibrate(
        net, info, np.eye(info.channels, dtype=np.float32), list(config.photos), config.top))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), np.uint8)).save(photos / "noise.png")
    code, _, err = run(capsys, "analyze", str(tmp_path / "x.h5"), "--images", str(photos), "--top", "50")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("jaxvis: error: the photos hold only ")
    assert err.endswith("50 wanted; use fewer (--top) or more photos (--images)\n")


def test_units_beyond_the_layer_are_refused_before_they_are_expanded():
    import resource
    from types import SimpleNamespace

    from jaxvis.cli import check_units
    from jaxvis.errors import JaxvisError
    from jaxvis.models.registry import ModelConfig, build

    model = SimpleNamespace(network=build(ModelConfig.make("vgg19")))  # conv1_1: 64 channels
    check_units("0-63", model, "conv1_1")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for spec in ("0-99999999", "0-999999999", "3,64"):
        with pytest.raises(JaxvisError, match=r"^--units .*out of range for conv1_1, which has 64 channels; "
                                              r"valid: 0-63$"):
            check_units(spec, model, "conv1_1")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50 * 1024  # KiB: nothing expanded
    with pytest.raises(JaxvisError, match="conv1_1, which has 64"):  # the smallest of several layers
        check_units("100", model, "conv1_1,conv3_1")


def test_docs_cli_md_names_only_the_parsers_flags_with_their_defaults():
    """docs/cli.md in step with the parser: every flag it names is one, and a value it quotes in a
    synopsis (``[--shift-steps 600]``) for a flag of one command is that flag's default."""
    import re
    from pathlib import Path

    from jaxvis.cli import build_parser

    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    actions = {name: {flag: action for action in p._actions for flag in action.option_strings}
               for name, p in commands.items()}
    every = set().union(*actions.values())
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) <= every
    quoted = re.findall(r"\[(--[a-z-]+)\s+(\d[\d.]*)\]", text)
    assert quoted  # the analyze synopsis quotes its defaults
    for flag, value in quoted:
        owners = [name for name in actions if flag in actions[name]]
        assert len(owners) == 1 and str(actions[owners[0]][flag].default) == value, (flag, value, owners)
