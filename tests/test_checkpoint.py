"""pydl.save / pydl.load: .safetensors and .npz checkpoints that move both ways between
pydl and torch, atomic writes, and clear errors for every kind of bad file or state_dict."""
import os
import pickle
import stat
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import pydl
from pydl import nn
from pydl.serialization import CheckpointError, load_into, load_metadata

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

FORMATS = [".safetensors", ".npz"]


class Tiny(nn.Module):
    """Parameters, a 0-d int buffer (as num_batches_tracked) and a non-persistent one."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(pydl.randn(3, 4).data)
        self.bias = nn.Parameter(pydl.randn(3).data)
        self.register_buffer("count", np.array(7, np.int64))
        self.register_buffer("scratch", np.ones(2, np.float32), persistent=False)


def twins(seed=0):
    """The same MLP in pydl and torch, torch's weights copied into pydl's; BatchNorm1d gives
    the state_dict its buffers, num_batches_tracked a 0-d one."""
    torch.manual_seed(seed)
    t = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        t[1].running_mean.normal_()
        t[1].running_var.uniform_(0.5, 2.0)
        t[1].weight.normal_()
        t[1].num_batches_tracked.fill_(11)
    pydl.manual_seed(seed + 1)
    p = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    return p.eval(), t.eval()


def fresh_pydl():
    pydl.manual_seed(123)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def pydl_out(m):
    with pydl.no_grad():
        return m(pydl.tensor(X)).numpy()


def torch_out(m):
    with torch.no_grad():
        return m(torch.from_numpy(X)).numpy()


def assert_state_equal(a, b):
    a, b = dict(a), dict(b)
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape and x.dtype == y.dtype, (k, x.shape, y.shape, x.dtype, y.dtype)
        np.testing.assert_array_equal(x, y, err_msg=k)


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_model(tmp_path, suffix):
    p, _ = twins()
    path = tmp_path / ("model" + suffix)
    pydl.save(p, path)
    sd = pydl.load(path)
    assert isinstance(sd, OrderedDict)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert_state_equal(sd, p.state_dict())
    assert sd["1.num_batches_tracked"].shape == () and sd["1.num_batches_tracked"].dtype == np.int64
    if suffix == ".npz":
        assert list(sd) == list(p.state_dict())  # the file keeps the state_dict's order
    q = fresh_pydl()
    assert not np.array_equal(pydl_out(q), pydl_out(p))
    assert load_into(q, path) == ([], [])
    assert_state_equal(q.state_dict(), p.state_dict())
    np.testing.assert_array_equal(pydl_out(q), pydl_out(p))


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_own_module_and_state_dict(tmp_path, suffix):
    m = Tiny()
    path = os.path.join(tmp_path, "tiny" + suffix)  # a str path as well as a Path
    pydl.save(m.state_dict(), path)
    sd = pydl.load(path)
    assert set(sd) == {"weight", "bias", "count"}  # the non-persistent buffer stays out
    assert sd["count"].shape == () and int(sd["count"]) == 7
    n = Tiny()
    n.load_state_dict(sd)
    assert_state_equal(n.state_dict(), m.state_dict())


@pytest.mark.parametrize("suffix", FORMATS)
def test_values_of_every_kind(tmp_path, suffix):
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    sd = OrderedDict([
        ("tensor", pydl.tensor(np.ones(3, np.float32))),
        ("param", nn.Parameter(np.full(2, 2.0, np.float32))),
        ("torch", torch.arange(4, dtype=torch.int32)),
        ("transposed", base.T),  # not contiguous
        ("strided", base[:, ::2]),
        ("scalar", np.float32(1.5)),
        ("zero_d", np.array(True)),
        ("empty", np.zeros((0, 3), np.float16)),
        ("big_endian", np.arange(3, dtype=">i4")),
        ("u8", np.arange(5, dtype=np.uint8)),
    ])
    path = tmp_path / ("all" + suffix)
    pydl.save(sd, path)
    back = pydl.load(path)
    expect = {"tensor": np.ones(3, np.float32), "param": np.full(2, 2.0, np.float32),
              "torch": np.arange(4, dtype=np.int32), "transposed": base.T, "strided": base[:, ::2],
              "scalar": np.array(1.5, np.float32), "zero_d": np.array(True), "empty": np.zeros((0, 3), np.float16),
              "big_endian": np.arange(3, dtype=np.int32), "u8": np.arange(5, dtype=np.uint8)}
    assert set(back) == set(expect)
    for k, v in expect.items():
        assert back[k].shape == v.shape and back[k].dtype.kind == v.dtype.kind, k
        assert back[k].dtype.itemsize == v.dtype.itemsize, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_empty_state_dict(tmp_path):
    for suffix in FORMATS:
        pydl.save({}, tmp_path / ("e" + suffix))
        assert pydl.load(tmp_path / ("e" + suffix)) == OrderedDict()


def test_cupy_arrays_come_to_the_host(tmp_path):
    class FakeCupy:
        """Enough of a CuPy array for pydl's array-kind check; .get() copies to the host."""
        __module__ = "cupy._core.core"
        __cuda_array_interface__ = {}

        def __init__(self, a):
            self.a = a

        def get(self):
            return self.a.copy()

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    for suffix in FORMATS:
        pydl.save({"w": FakeCupy(a)}, tmp_path / ("c" + suffix))
        np.testing.assert_array_equal(pydl.load(tmp_path / ("c" + suffix))["w"], a)


@pytest.mark.gpu
def test_cupy_model_round_trip(tmp_path):
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:
        pytest.skip("no CUDA device")
    m = Tiny().to("cuda")
    pydl.save(m, tmp_path / "g.safetensors")
    sd = pydl.load(tmp_path / "g.safetensors")
    np.testing.assert_array_equal(sd["weight"], m.weight.data.get())
    n = Tiny().to("cuda")
    load_into(n, tmp_path / "g.safetensors")
    assert isinstance(n.weight.data, cupy.ndarray)
    np.testing.assert_array_equal(n.weight.data.get(), m.weight.data.get())


def test_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    pydl.save(Tiny(), path, metadata={"epoch": "3", "arch": "tiny"})
    assert load_metadata(path) == {"epoch": "3", "arch": "tiny"}
    pydl.save(Tiny(), path)
    assert load_metadata(path) == {}
    with pytest.raises(TypeError, match="metadata"):
        pydl.save(Tiny(), path, metadata={"epoch": 3})
    with pytest.raises(ValueError, match="metadata"):
        pydl.save(Tiny(), tmp_path / "m.npz", metadata={"epoch": "3"})
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(ValueError):
        load_metadata(tmp_path / "m.npz")


def test_reachable_from_the_package():
    import pydl.serialization as s
    assert pydl.save is s.save and pydl.load is s.load
    assert issubclass(CheckpointError, ValueError)


# -- between pydl and torch ------------------------------------------------------------------------


def test_pydl_safetensors_loads_into_torch(tmp_path):
    p, t = twins()
    p.load_state_dict(t.state_dict())
    with torch.no_grad():  # make torch's differ first, so the load has something to do
        for v in t.parameters():
            v.zero_()
    path = tmp_path / "from_pydl.safetensors"
    pydl.save(p, path)
    sd = safetensors_torch.load_file(str(path))
    assert sd["1.num_batches_tracked"].shape == () and sd["1.num_batches_tracked"].dtype == torch.int64
    t.load_state_dict(sd)  # strict
    np.testing.assert_allclose(torch_out(t), pydl_out(p), rtol=1e-5, atol=1e-6)
    assert_state_equal({k: v.numpy() for k, v in t.state_dict().items()}, p.state_dict())


def test_torch_safetensors_loads_into_pydl(tmp_path):
    p, t = twins()
    path = tmp_path / "from_torch.safetensors"
    safetensors_torch.save_file(t.state_dict(), str(path))
    assert load_into(p, path) == ([], [])
    np.testing.assert_allclose(pydl_out(p), torch_out(t), rtol=1e-5, atol=1e-6)
    assert int(p[1].num_batches_tracked) == 11


def test_torch_module_saved_by_pydl(tmp_path):
    p, t = twins()
    pydl.save(t, tmp_path / "t.npz")  # a torch module: its state_dict, on the host
    load_into(p, tmp_path / "t.npz")
    np.testing.assert_allclose(pydl_out(p), torch_out(t), rtol=1e-5, atol=1e-6)


def test_state_dicts_move_directly_both_ways():
    p, t = twins()
    p2, t2 = twins(seed=5)
    # torch -> pydl: torch tensors straight into load_state_dict
    p.load_state_dict(t.state_dict())
    np.testing.assert_allclose(pydl_out(p), torch_out(t), rtol=1e-5, atol=1e-6)
    # pydl -> torch: the arrays through torch.from_numpy
    t2.load_state_dict({k: torch.from_numpy(v) for k, v in p.state_dict().items()})
    np.testing.assert_allclose(torch_out(t2), pydl_out(p), rtol=1e-5, atol=1e-6)
    assert list(p.state_dict()) == list(t.state_dict())


# -- atomic writes -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch, suffix, exc):
    import pydl.serialization as s

    path = tmp_path / ("ck" + suffix)
    pydl.save(Tiny(), path)
    old = path.read_bytes()
    writer = "_write_safetensors" if suffix == ".safetensors" else "_write_npz"
    real = getattr(s, writer)

    def half_then_fail(f, arrays, metadata):
        import io
        buf = io.BytesIO()
        real(buf, arrays, metadata)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        raise exc("disk on fire")

    monkeypatch.setattr(s, writer, half_then_fail)
    with pytest.raises(exc, match="disk on fire"):
        pydl.save(Tiny(), path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == [path.name]
    monkeypatch.undo()
    assert set(pydl.load(path)) == {"weight", "bias", "count"}


def test_failed_rename_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"

    def no_replace(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="rename refused"):
        pydl.save(Tiny(), path)
    assert os.listdir(tmp_path) == []


def test_bad_state_dict_writes_nothing(tmp_path):
    path = tmp_path / "ck.safetensors"
    pydl.save(Tiny(), path)
    old = path.read_bytes()
    with pytest.raises(TypeError, match="'obj' is an object array"):
        pydl.save({"w": np.ones(2), "obj": np.array([1, None], dtype=object)}, path)
    with pytest.raises(TypeError, match="keys must be str"):
        pydl.save({1: np.ones(2)}, path)
    with pytest.raises(TypeError, match="'w' is a list"):
        pydl.save({"w": [1.0, 2.0]}, path)
    with pytest.raises(TypeError, match="float128|longdouble|cannot hold"):
        pydl.save({"w": np.ones(2, np.longdouble)}, path)
    with pytest.raises(TypeError, match="'bf' .*bfloat16|'bf'"):
        pydl.save({"bf": torch.ones(2, dtype=torch.bfloat16)}, path)
    with pytest.raises(TypeError, match="state_dict"):
        pydl.save([np.ones(2)], path)
    with pytest.raises(TypeError, match="object array"):
        pydl.save({"obj": np.array([1, None], dtype=object)}, tmp_path / "o.npz")
    assert path.read_bytes() == old and sorted(os.listdir(tmp_path)) == [path.name]


def test_overwrite_keeps_mode_and_new_file_gets_umask_mode(tmp_path):
    path = tmp_path / "ck.npz"
    pydl.save(Tiny(), path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    os.chmod(path, 0o640)
    pydl.save(Tiny(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "ck.safetensors"
    pydl.save({"a": np.zeros(1)}, target)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(target)
    pydl.save({"a": np.ones(1)}, link)
    assert link.is_symlink() and pydl.load(target)["a"][0] == 1


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pydl.save(Tiny(), tmp_path / "nope" / "ck.npz")


# -- bad files -------------------------------------------------------------------------------------


def _expect_bad(path, *words):
    with pytest.raises(CheckpointError) as e:
        pydl.load(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated_files(tmp_path, suffix):
    good = tmp_path / ("good" + suffix)
    pydl.save(twins()[0], good)
    data = good.read_bytes()
    cut = tmp_path / ("cut" + suffix)
    for n in sorted({1, 4, 7, 8, 9, 30, 100, len(data) // 2, len(data) - 100, len(data) - 1}):
        cut.write_bytes(data[:n])
        _expect_bad(cut)


@pytest.mark.parametrize("suffix", FORMATS)
def test_foreign_files(tmp_path, suffix):
    path = tmp_path / ("bad" + suffix)
    path.write_bytes(b"")
    _expect_bad(path, "empty")
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    _expect_bad(path)
    path.write_text("weight = [1, 2, 3]\nthis is a text file\n" * 20)
    _expect_bad(path)
    path.write_bytes(pickle.dumps({"weight": np.ones(3)}))
    _expect_bad(path)
    with open(path, "wb") as f:
        np.save(f, np.ones(3))  # a lone .npy
    _expect_bad(path)


def test_npz_that_is_some_other_zip(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not arrays")
    _expect_bad(path, "readme.txt")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", b"not a .npy at all")
    _expect_bad(path, "'w'")


def test_npz_with_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, w=np.ones(2), o=np.array([1, None], dtype=object))
    _expect_bad(path, "member 'o'", "Object arrays")


def test_npz_with_corrupt_member(tmp_path):
    path = tmp_path / "crc.npz"
    pydl.save({"w": np.arange(100, dtype=np.float64)}, path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside w's data: the CRC no longer matches
    path.write_bytes(bytes(data))
    _expect_bad(path, "member 'w'", "CRC")


def test_safetensors_with_a_dtype_numpy_lacks(tmp_path):
    path = tmp_path / "bf16.safetensors"
    safetensors_torch.save_file({"w": torch.ones(2, dtype=torch.bfloat16)}, str(path))
    _expect_bad(path, "BF16")


def test_wrong_suffix_and_missing_file(tmp_path):
    for name in ("model.pt", "model.pth", "model", "model.json"):
        with pytest.raises(ValueError, match=r"\.safetensors, \.npz") as e:
            pydl.save(Tiny(), tmp_path / name)
        assert name in str(e.value)
        with pytest.raises(ValueError, match=r"\.safetensors, \.npz"):
            pydl.load(tmp_path / name)
    assert os.listdir(tmp_path) == []
    for suffix in FORMATS:
        missing = tmp_path / ("missing" + suffix)
        with pytest.raises(FileNotFoundError, match="missing" + suffix.replace(".", r"\.")):
            pydl.load(missing)
    pydl.save(Tiny(), tmp_path / "UPPER.NPZ")  # the suffix is case-blind
    assert "weight" in pydl.load(tmp_path / "UPPER.NPZ")


# -- loading into a model: keys, shapes, dtypes -------------------------------------------------------


def _params(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


@pytest.fixture
def saved(tmp_path):
    """A model, and a function writing a changed copy of its state_dict to a checkpoint."""
    p, _ = twins()

    def write(change, suffix=".safetensors"):
        sd = OrderedDict((k, v + 1 if v.dtype.kind == "f" else v) for k, v in p.state_dict().items())
        change(sd)
        path = tmp_path / ("edited" + suffix)
        pydl.save(sd, path)
        return path

    return p, write


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("suffix", FORMATS)
def test_wrong_shape_loads_nothing(saved, strict, suffix):
    p, write = saved
    before = _params(p)
    path = write(lambda sd: sd.__setitem__("3.weight", np.ones((3, 9), np.float32)), suffix)
    with pytest.raises(ValueError, match=r"edited.*'3\.weight' has shape \(3, 9\).*\(3, 8\)"):
        load_into(p, path, strict=strict)
    assert_state_equal(p.state_dict(), before)  # not even the keys before 3.weight


@pytest.mark.parametrize("strict", [True, False])
def test_wrong_dtype_loads_nothing(saved, strict):
    p, write = saved
    before = _params(p)
    path = write(lambda sd: sd.__setitem__("1.num_batches_tracked", np.array(1.0, np.float32)))
    with pytest.raises(TypeError, match=r"'1\.num_batches_tracked' has dtype float32"):
        load_into(p, path, strict=strict)
    assert_state_equal(p.state_dict(), before)


def test_float64_checkpoint_loads_into_float32_model(saved):
    p, write = saved
    path = write(lambda sd: sd.__setitem__("0.bias", sd["0.bias"].astype(np.float64)))
    load_into(p, path)
    assert p[0].bias.dtype == np.float32


def test_missing_and_extra_keys(saved):
    p, write = saved
    before = _params(p)
    path = write(lambda sd: (sd.pop("0.bias"), sd.__setitem__("head.weight", np.ones(2, np.float32))))
    with pytest.raises(KeyError) as e:
        load_into(p, path)
    assert "0.bias" in str(e.value) and "head.weight" in str(e.value) and str(path) in str(e.value)
    assert_state_equal(p.state_dict(), before)
    missing, unexpected = load_into(p, path, strict=False)
    assert missing == ["0.bias"] and unexpected == ["head.weight"]
    np.testing.assert_array_equal(p[0].bias.data, before["0.bias"])  # the missing one untouched
    np.testing.assert_array_equal(p[0].weight.data, before["0.weight"] + 1)  # the others loaded
