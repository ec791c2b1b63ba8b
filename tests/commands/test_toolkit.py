"""The toolkit subcommands end to end on tiny digits runs: PNG written, JSON keys, one-line
errors with exit code 2."""

import json

import numpy as np
import pytest

from ppl_vae.commands.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _train(out, *extra):
    rc = main(["train", "--data", "digits", "--hidden", "32", "--epochs", "2", "--batch-size",
               "64", "--out", str(out), "--no-progress", *extra])
    assert rc == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toolkit_runs")
    _train(root / "l2", "--latent-dim", "2")
    _train(root / "l3", "--latent-dim", "3")
    return root


def _png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG


def _one_line_error(capsys, rc, message):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [
    ["sample", "-n", "9", "--temperature", "0.7"],
    ["sample", "--draw"],
    ["reconstruct", "-n", "5"],
    ["interpolate", "--method", "slerp", "--steps", "4", "-n", "2"],
    ["manifold", "--steps", "5"],
])
def test_figure_commands_on_a_2d_run(runs, tmp_path, capsys, argv):
    out = tmp_path / "fig.png"
    assert main([*argv, "--run", str(runs / "l2"), "--out", str(out)]) == 0
    _png(out)
    assert str(out) in capsys.readouterr().out


def test_manifold_traverses_a_3d_run(runs, tmp_path, capsys):
    for dims in ("0,2", "0,1,2"):
        out = tmp_path / f"trav{dims}.png"
        assert main(["manifold", "--run", str(runs / "l3"), "--out", str(out), "--dims", dims,
                     "--around", "3", "--steps", "4"]) == 0
        _png(out)
    rc = main(["manifold", "--run", str(runs / "l3"), "--out", str(tmp_path / "g.png"),
               "--mode", "grid"])
    _one_line_error(capsys, rc, "2-D manifold needs a 2-dimensional latent")
    rc = main(["manifold", "--run", str(runs / "l3"), "--out", str(tmp_path / "g.png"),
               "--around", "250"])
    _one_line_error(capsys, rc, "--around 250 is out of range")
    rc = main(["manifold", "--run", str(runs / "l3"), "--out", str(tmp_path / "g.png"),
               "--dims", "0,7"])
    _one_line_error(capsys, rc, "out of range")


def test_a_2d_traversal_of_a_2d_latent_is_not_passed_off_as_one(runs, tmp_path, capsys):
    """Traversing both dimensions of a 2-D latent ignores the point: one line says so."""
    rc = main(["manifold", "--run", str(runs / "l2"), "--out", str(tmp_path / "t.png"),
               "--mode", "traverse", "--dims", "0,1", "--around", "3"])
    _one_line_error(capsys, rc, "would be the grid of prior quantiles")


def test_manifold_axes_carry_the_latent_values(runs, tmp_path, monkeypatch):
    import ppl_vae.io.plots as plots

    seen = {}
    real = plots.save_image_grid

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "save_image_grid", spy)
    assert main(["manifold", "--run", str(runs / "l2"), "--out", str(tmp_path / "m.png"),
                 "--steps", "4"]) == 0
    assert len(seen["col_labels"]) == 4 and len(seen["row_labels"]) == 4
    cols = [float(v) for v in seen["col_labels"]]
    rows = [float(v) for v in seen["row_labels"]]
    assert cols == sorted(cols) and rows == sorted(rows, reverse=True)  # dim 1 down the rows
    assert seen["xlabel"].startswith("z[0]") and seen["ylabel"] == "z[1]"


def test_attribute_json_and_errors(runs, tmp_path, capsys):
    out = tmp_path / "attr.png"
    assert main(["attribute", "--run", str(runs / "l2"), "--out", str(out), "--attribute", "3",
                 "--alphas", "0,1,2", "--json"]) == 0
    _png(out)
    obj = json.loads(capsys.readouterr().out)
    assert obj["attribute"] == 3 and obj["alphas"] == [0.0, 1.0, 2.0]
    assert obj["split"] == "test" and obj["direction_split"] == "train"
    assert len(obj["target_rate"]) == 3 and obj["num_with"] + obj["num_without"] == 1297
    rc = main(["attribute", "--run", str(runs / "l2"), "--out", str(out), "--attribute", "42"])
    _one_line_error(capsys, rc, "unknown attribute 42")


def test_attribute_without_labels_is_refused(tmp_path, capsys):
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "bin.npz", **{k: rng.randint(0, 2, (n, 16)).astype(np.uint8)
                                      for k, n in (("train", 40), ("valid", 8), ("test", 8))})
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "bin.npz"), "--hidden", "8", "--epochs", "1",
                 "--latent-dim", "2", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    rc = main(["attribute", "--run", str(run), "--out", str(tmp_path / "a.png"),
               "--attribute", "1"])
    _one_line_error(capsys, rc, "has no labels")


def test_impute_json(runs, tmp_path, capsys):
    out = tmp_path / "imp.png"
    assert main(["impute", "--run", str(runs / "l2"), "--out", str(out), "--missing",
                 "random-0.5", "-k", "50", "--limit", "40", "--json"]) == 0
    _png(out)
    obj = json.loads(capsys.readouterr().out)
    for key in ("method", "missing", "vae_error", "baseline_error", "vae_log_likelihood"):
        assert key in obj
    assert obj["missing"] == "random-0.5" and obj["n"] == 40 and obj["samples"] == 50
    assert obj["vae_log_likelihood"] < 0 and 0 < obj["baseline_error"] < 1
    rc = main(["impute", "--run", str(runs / "l2"), "--out", str(out), "--missing", "top-half"])
    _one_line_error(capsys, rc, "unknown missing pattern 'top-half'")


@pytest.mark.parametrize("cmd", ["sample", "reconstruct", "interpolate", "manifold", "impute"])
def test_missing_run_directory(tmp_path, capsys, cmd):
    rc = main([cmd, "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")])
    _one_line_error(capsys, rc, "no such run directory")


def test_out_must_be_a_png(runs, tmp_path, capsys):
    rc = main(["sample", "--run", str(runs / "l2"), "--out", str(tmp_path / "x.jpg")])
    _one_line_error(capsys, rc, "give a .png file name")
    rc = main(["sample", "--run", str(runs / "l2"), "--out", str(tmp_path / "x.png"), "-n", "0"])
    _one_line_error(capsys, rc, "--num must be >= 1")


def test_help_has_readable_metavars(capsys):
    with pytest.raises(SystemExit):
        main(["impute", "--help"])
    text = capsys.readouterr().out
    assert "--run DIR" in text and "--out FILE.png" in text and "-k K" in text
    assert "--missing PATTERN" in text


def test_posterior_json_small_budget(runs, tmp_path, capsys):
    out = tmp_path / "post.png"
    assert main(["posterior", "--run", str(runs / "l2"), "--out", str(out), "--index", "0,4",
                 "--num-samples", "30", "--warmup", "20", "--gap-steps", "30", "-k", "200",
                 "--json", "--no-progress"]) == 0
    _png(out)
    obj = json.loads(capsys.readouterr().out)
    assert obj["index"] == [0, 4] and len(obj["points"]) == 2
    for key in ("approximation_gap", "amortization_gap", "r_hat_max", "ess_bulk_min"):
        assert key in obj and key in obj["points"][0]
    p0 = obj["points"][0]
    assert abs(p0["approximation_gap"] + p0["amortization_gap"] - p0["inference_gap"]) < 1e-9
    assert len(p0["posterior_mean"]) == 2
    rc = main(["posterior", "--run", str(runs / "l2"), "--out", str(out), "--index", "999"])
    _one_line_error(capsys, rc, "--index 999 is out of range")


def test_posterior_marginals_on_a_3d_run(runs, tmp_path, capsys):
    out = tmp_path / "post3.png"
    assert main(["posterior", "--run", str(runs / "l3"), "--out", str(out), "--num-samples",
                 "20", "--warmup", "10", "--no-gap", "--no-progress"]) == 0
    _png(out)
    assert "R-hat" in capsys.readouterr().out


def test_embed_several_runs(runs, tmp_path, capsys):
    ae = tmp_path / "ae"
    assert main(["train", "--data", "digits", "--model", "ae", "--latent-dim", "2", "--hidden",
                 "32", "--epochs", "2", "--batch-size", "64", "--out", str(ae),
                 "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "emb"
    argv = ["embed", "--run", str(runs / "l2"), "--run", str(runs / "l3"), "--run", str(ae),
            "--out", str(out), "--json"]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj) == {str(runs / "l2"), str(runs / "l3"), str(ae)}
    for v in obj.values():
        assert 0 <= v["knn_accuracy"] <= 1 and v["normality"] >= 0
    assert obj[str(runs / "l3")]["latent_dim"] == 3 and obj[str(ae)]["model"] == "ae"
    _png(out / "embed.png")
    assert (out / "embed.csv").read_text().count("\n") == 4
    rc = main(["embed", "--run", str(tmp_path / "nope"), "--out", str(out)])
    _one_line_error(capsys, rc, "no such run directory")
