"""The README's model example runs as written (build, train, save, load) and its loss falls."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(after: str) -> str:
    text = README.read_text()
    start = text.index(after)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_models_example_trains_and_round_trips(tmp_path, monkeypatch, capsys):
    code = _block("## Models: `pydl.nn`")
    assert len([line for line in code.splitlines() if line.strip()]) <= 15
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["loss"].item() < 2.2  # 10 classes start near ln 10 = 2.30
    assert (tmp_path / "model.safetensors").is_file()
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                             torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10))
    tm.load_state_dict(st.load_file(str(tmp_path / "model.safetensors")))
    x = ns["x"]
    out = tm(torch.from_numpy(x.numpy())).detach().numpy()
    import numpy as np
    np.testing.assert_allclose(ns["model"](x).numpy(), out, rtol=1e-4, atol=1e-5)
