"""pydl.train and `pydl train`: the fit loop, checkpoints and resume, repeatability, curves,
cross-validation, search and the command line, on scikit-learn's 8x8 digits (seconds)."""
import csv
import functools

import numpy as np
import pytest

import pydl
from pydl import data, nn
from pydl import train as T
from pydl.cli import main

BACKEND = "cpp"  # the run's backend order: cpp first, the ops it lacks on the next fastest


@functools.lru_cache(maxsize=1)
def _digits():
    s = data.load("digits", seed=0)
    tr, va = data.stratified_split(s.y_train, 0.25, seed=0)
    return s.x_train[tr], s.y_train[tr], s.x_train[va], s.y_train[va]


def _loaders(batch_size=32, seed=0, n=None):
    xtr, ytr, xva, yva = _digits()
    if n:
        xtr, ytr = xtr[:n], ytr[:n]
    return (data.DataLoader(data.TensorDataset(xtr, ytr), batch_size, shuffle=True, seed=seed),
            data.DataLoader(data.TensorDataset(xva, yva), 200))


def _model(seed=0, dropout=0.0):
    pydl.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(64, 48), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(48, 10))


def _weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _strip(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_fit_learns_and_reports_every_epoch():
    tl, vl = _loaders()
    model = _model()
    loss0, acc0 = T.evaluate(model, vl)
    lines = []
    res = T.fit(model, tl, vl, "adam", epochs=4, lr=3e-3, seed=0, backend=BACKEND, threads=1, progress=False,
                log=lines.append)
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and len(lines) == 4 and "val loss" in lines[0]
    assert h[-1]["train_loss"] < 0.5 * h[0]["train_loss"]
    assert h[-1]["val_loss"] < 0.5 * loss0 and h[-1]["val_acc"] > 0.85 and acc0 < 0.3
    assert res.best_epoch == int(np.argmin([r["val_loss"] for r in h])) + 1
    loss, acc = T.evaluate(model, vl)
    assert (loss, acc) == (res.best_val_loss, res.best_val_acc)  # the best epoch's weights were restored
    assert model.training  # evaluate restored the mode


def test_seed_repeats_bit_for_bit_and_another_seed_differs():
    def run(seed):
        tl, vl = _loaders(seed=123)
        model = _model(seed, dropout=0.2)
        res = T.fit(model, tl, vl, "adam", epochs=2, lr=3e-3, seed=seed, backend=BACKEND, threads=1,
                    progress=False, log=None)
        return _strip(res.history), _weights(model)

    (h1, w1), (h2, w2), (h3, w3) = run(5), run(5), run(6)
    assert h1 == h2
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert h1 != h3 and not np.array_equal(w1["1.weight"], w3["1.weight"])


def test_resume_continues_as_if_never_stopped(tmp_path):
    common = dict(lr=3e-3, seed=3, backend=BACKEND, threads=1, progress=False, log=None, schedule="cosine")
    tl, vl = _loaders()
    straight = _model(3, dropout=0.3)
    full = T.fit(straight, tl, vl, "adam", epochs=4, out=tmp_path / "a", restore_best=False, **common)

    class Crash(Exception):
        pass

    def crash_after_epoch_2(line):
        if line.startswith("epoch   2/4"):
            raise Crash  # the run dies after its second epoch's checkpoint

    tl, vl = _loaders()
    first = _model(3, dropout=0.3)
    with pytest.raises(Crash):
        T.fit(first, tl, vl, "adam", epochs=4, out=tmp_path / "b", **{**common, "log": crash_after_epoch_2})
    tl, vl = _loaders()
    resumed = _model(99, dropout=0.3)  # other initial weights: the checkpoint replaces them
    res = T.fit(resumed, tl, vl, "adam", epochs=4, out=tmp_path / "b", resume=tmp_path / "b" / "last.safetensors",
                restore_best=False, **{**common, "seed": None})
    assert _strip(res.history) == _strip(full.history)
    ws, wr = _weights(straight), _weights(resumed)
    assert all(np.array_equal(ws[k], wr[k]) for k in ws)
    # the checkpoints: best is a plain state_dict that loads into the model
    other = _model(7, dropout=0.3)
    pydl.serialization.load_into(other, tmp_path / "b" / "best.safetensors")
    assert float(pydl.serialization.load_metadata(tmp_path / "b" / "best.safetensors")["epoch"]) == res.best_epoch
    with pytest.raises(ValueError, match="no training state"):
        T.fit(_model(), tl, vl, "adam", epochs=5, resume=tmp_path / "b" / "best.safetensors", progress=False,
              log=None)
    with pytest.raises(ValueError, match="trained with Adam"):
        T.fit(_model(), tl, vl, "sgd", epochs=5, resume=tmp_path / "b" / "last.safetensors", progress=False,
              log=None)


def test_early_stopping_and_restore_best(tmp_path):
    tl, vl = _loaders()
    model = _model()
    lines = []
    # an improvement must beat 1e3: none after the first epoch, so patience 2 stops at epoch 3
    res = T.fit(model, tl, vl, "adam", epochs=10, lr=3e-3, patience=2, min_delta=1e3, seed=0, backend=BACKEND,
                threads=1, out=tmp_path, progress=False, log=lines.append)
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1
    assert "early stopping" in lines[-1]
    best = pydl.load(tmp_path / "best.safetensors")
    w = _weights(model)
    assert all(np.array_equal(best[k], w[k]) for k in w)  # ended on the best (epoch 1) weights
    assert res.history[0]["val_loss"] == pytest.approx(T.evaluate(model, vl)[0])


def test_curves_csv_and_png(tmp_path):
    tl, vl = _loaders(n=300)
    res = T.fit(_model(), tl, vl, "sgd", epochs=3, lr=0.05, seed=0, backend=BACKEND, threads=1, out=tmp_path,
                progress=False, log=None)
    with open(tmp_path / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and tuple(rows[0]) == T.CURVE_COLUMNS
    assert [float(r["val_acc"]) for r in rows] == [r["val_acc"] for r in res.history]
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert res.files["png"] == str(tmp_path / "curves.png")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_clip_bounds_each_update_and_weight_decay_goes_to_the_optimizer():
    tl, _ = _loaders(batch_size=50, n=500)
    model = _model()
    w0 = _weights(model)
    T.fit(model, tl, None, "sgd", epochs=1, lr=0.1, momentum=0.0, clip=1e-3, seed=0, progress=False, log=None)
    moved = np.sqrt(sum(((model.state_dict()[k] - w0[k]) ** 2).sum() for k in w0))
    assert 0 < moved <= 10 * 0.1 * 1e-3 * (1 + 1e-4)  # 10 steps of at most lr * clip each
    opt = T.make_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=0.05)
    assert type(opt).__name__ == "AdamW" and opt.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="weight_decay"):
        T.fit(model, tl, None, opt, epochs=1, weight_decay=0.1, progress=False, log=None)


def test_fit_bad_arguments_and_divergence():
    tl, vl = _loaders(n=200)
    with pytest.raises(ValueError, match="patience.*val_loader"):
        T.fit(_model(), tl, None, patience=2, progress=False, log=None)
    with pytest.raises(ValueError, match="epochs"):
        T.fit(_model(), tl, vl, epochs=0, progress=False, log=None)
    with pytest.raises(ValueError, match="optimizer"):
        T.fit(_model(), tl, vl, "lbfgs", progress=False, log=None)
    with pytest.raises(ValueError, match="schedule"):
        T.fit(_model(), tl, vl, schedule="linear", progress=False, log=None)
    with pytest.raises(ValueError, match="unknown backend"):
        T.fit(_model(), tl, vl, backend="fortran", progress=False, log=None)
    with pytest.raises(TypeError, match="Module"):
        T.fit(object(), tl, vl, progress=False, log=None)
    with pytest.raises(T.TrainingDiverged, match="lower the learning rate"):
        T.fit(_model(), tl, vl, "sgd", epochs=3, lr=1e30, progress=False, log=None)
    assert T.backend_order("cpp") == "cpp,cython,numba,numpy" and T.backend_order("numpy") == "numpy"


def test_cross_validate_and_search_report_mean_and_spread():
    xtr, ytr, _, _ = _digits()
    cfg = T.Config(model="mlp", model_options={"hidden": 32}, lr=1e-2, batch_size=32, epochs=2, seed=0)
    cv = T.cross_validate(cfg, xtr[:600], ytr[:600], k=3, backend=BACKEND, threads=1)
    assert len(cv.scores) == 3 and cv.mean == pytest.approx(np.mean(cv.scores))
    assert cv.std == pytest.approx(np.std(cv.scores)) and 0.5 < cv.mean <= 1.0
    lines = []
    res = T.search(cfg, xtr[:600], ytr[:600], {"lr": [1e-4, 1e-2], "hidden": [16, 32]}, "grid", backend=BACKEND,
                   threads=1, log=lines.append)
    assert len(res.trials) == 4 and len(lines) == 4
    assert [r["mean"] for r in res.trials] == sorted((r["mean"] for r in res.trials), reverse=True)
    assert res.best_params["lr"] == 1e-2  # 1e-4 barely moves in 2 epochs
    assert res.best_config.lr == 1e-2 and res.best_config.model_options["hidden"] == res.best_params["hidden"]
    rnd = T.search(cfg, xtr[:600], ytr[:600], {"lr": [1e-3, 3e-3, 1e-2]}, "random", trials=2, kfold=2,
                   backend=BACKEND, threads=1)
    assert len(rnd.trials) == 2 and all(len(r["scores"]) == 2 for r in rnd.trials)
    assert all(r["std"] == pytest.approx(np.std(r["scores"])) for r in rnd.trials)
    with pytest.raises(ValueError, match="trials"):
        T.search(cfg, xtr, ytr, {"lr": [1e-3]}, "random")


# -- the command line -----------------------------------------------------------------------


def _cli(capsys, *argv):
    rc = main(["train", "--model", "mlp", "--data", "digits", "--threads", "1", "--no-progress", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_trains_writes_files_and_resumes(tmp_path, capsys):
    rc, out, err = _cli(capsys, "--epochs", "2", "--lr", "3e-3", "--out", str(tmp_path))
    assert rc == 0, err
    assert "epoch   2/2" in out and "test accuracy" in out
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert 70 < acc <= 100
    for name in ("best.safetensors", "last.safetensors", "curves.csv", "curves.png"):
        assert (tmp_path / name).is_file()
    rc, out, err = _cli(capsys, "--epochs", "3", "--lr", "3e-3", "--out", str(tmp_path),
                        "--resume", str(tmp_path / "last.safetensors"))
    assert rc == 0, err
    assert "epoch   3/3" in out and "epoch   1/3" not in out
    with open(tmp_path / "curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_cli_kfold_and_search(tmp_path, capsys):
    rc, out, err = _cli(capsys, "--epochs", "1", "--kfold", "2", "--batch-size", "128")
    assert rc == 0, err
    assert "2-fold val accuracy" in out and "+-" in out
    rc, out, err = _cli(capsys, "--epochs", "1", "--search", "grid", "--param", "lr=0.003,0.0001",
                        "--param", "optimizer=adam,sgd", "--out", str(tmp_path))
    assert rc == 0, err
    assert out.count("trial ") == 4 and "test accuracy" in out and "'lr': 0.003" in out.split("rank")[1]


def test_cli_bad_arguments(capsys):
    assert _cli(capsys, "--search", "grid")[0] == 2
    rc, _, err = _cli(capsys, "--val-fraction", "1.5")
    assert rc == 2 and "--val-fraction" in err
    rc, _, err = _cli(capsys, "--data", "cifar")
    assert rc == 2 and "unknown data set" in err
    rc, _, err = _cli(capsys, "--backend", "fortran")
    assert rc == 2 and "unknown backend" in err
    rc = main(["train", "--model", "resnet9000", "--no-progress"])
    assert rc == 2 and "unknown model" in capsys.readouterr().err
