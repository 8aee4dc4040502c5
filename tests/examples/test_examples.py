"""The examples run as a new user would run them, at tiny sizes (``--tiny``), in this process
(the session's real weights, one compilation cache), and do what they say."""

from __future__ import annotations

import h5py
import numpy as np

from examples import deeper_layer, own_network, vgg19_one_layer


def test_one_layer_the_papers_way(weights_env, tmp_path):
    done = vgg19_one_layer.main(["--tiny", "--weights", "vgg19", "--layer", "conv1_2", "--out", str(tmp_path)])
    r = done["sweep"]
    assert r["images"].shape == (2, 3, 5, 5, 3) and (r["activations"] > 0).all()
    with h5py.File(done["results"]) as f:  # the metrics went into the results file
        assert "metrics" in f["layers/conv1_2"]
    assert done["csv"].read_text().count("\n") == 3  # a header and a row per unit
    assert "conv1_2" in done["report"].read_text()
    assert (tmp_path / "conv1_2.png").stat().st_size > 0


def test_a_deeper_layer_with_transforms_fourier_and_the_channel_objective(weights_env, tmp_path):
    results = deeper_layer.main(["--tiny", "--weights", "vgg19", "--layer", "conv1_2", "--out", str(tmp_path)])
    assert results["pixel"]["images"].shape[2] == 5 and results["channel"]["images"].shape[2] == 10
    # the same starts: the transforms and the basis, not the random numbers, make the difference
    assert not np.allclose(results["pixel"]["images"], results["fourier_transforms"]["images"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conv1_2_channel.png", "conv1_2_fourier_transforms.png", "conv1_2_pixel.png"]


def test_your_own_network_and_your_own_response(tmp_path):
    done = own_network.main(["--tiny", "--out", str(tmp_path)])
    peak, model = done["soft_peak"], done["model"]
    assert peak["images"].shape == (4, 1, 15, 15, 3)
    # the reported activations are the registered response of the stored images
    pre = model(peak["images"][0], upto="conv2").pre["conv2"]
    want = own_network.soft_peak(pre, np.eye(4, dtype=np.float32)[0])
    np.testing.assert_allclose(peak["activations"][0], want, rtol=1e-4, atol=1e-5)
