"""A checkpoint from an untrusted source cannot run code: a ``.pt`` whose pickle carries a ``__reduce__`` payload
(it writes a marker file when unpickled) is refused by ``scannet.checkpoint.load_model``, ``scannet.load``,
``scannet predict`` and ``scannet info`` without running the payload, because every loader uses
``torch.load(weights_only=True)``. The control case shows that the payload is live: a plain ``torch.load`` runs it.

The payload is also hidden inside an otherwise valid SCANNet checkpoint (its metadata), where a loader that
checked only the format marker after a full unpickle would be fooled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase.build import molecule
from ase.io import write

import scannet
from scannet.checkpoint import CheckpointError, load_model, save_model
from scannet.cli import main as cli_main
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, preset


class Payload:
    """Unpickling this calls ``exec``: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


@pytest.fixture()
def crafted(tmp_path):
    """(plain crafted file, valid checkpoint with the payload in its metadata, marker path)."""
    marker = tmp_path / "PAYLOAD_RAN"
    plain = tmp_path / "model.pt"
    torch.save({"format": "scannet-model", "state_dict": {}, "x": Payload(marker)}, plain)
    model = SCANN(preset("demo", targets=("homo",)))
    good = save_model(tmp_path / "good.pt", model, FeaturizerConfig(), {"units": {"homo": "eV"}})
    payload = torch.load(good, weights_only=True)
    payload["metadata"]["note"] = Payload(marker)
    hidden = tmp_path / "hidden.pt"
    torch.save(payload, hidden)
    assert not marker.exists()
    return plain, hidden, marker


def test_the_payload_is_live_when_unpickled_unsafely(crafted):
    plain, _, marker = crafted
    torch.load(plain, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("which", [0, 1], ids=["crafted", "hidden-in-valid-checkpoint"])
def test_library_loaders_refuse_without_running_it(crafted, which):
    path, marker = crafted[which], crafted[2]
    with pytest.raises(CheckpointError, match="refuses"):
        load_model(path)
    with pytest.raises(CheckpointError, match="refuses"):
        scannet.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["predict", "info"])
@pytest.mark.parametrize("which", [0, 1], ids=["crafted", "hidden-in-valid-checkpoint"])
def test_cli_refuses_without_running_it(crafted, which, command, tmp_path, capsys):
    path, marker = crafted[which], crafted[2]
    structure = tmp_path / "water.xyz"
    write(structure, molecule("H2O"), format="extxyz")
    argv = (
        ["info", str(path)]
        if command == "info"
        else ["predict", "--model", str(path), str(structure), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "refuses" in err, err
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class SystemPayload:
    """Unpickling this calls ``os.system`` (a module torch blocks by name, with its own advice text)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {str(self.marker)!r}",)


REFUSED = "scannet refuses it because it holds objects other than tensors"


@pytest.mark.parametrize("kind", ["exec", "os.system", "object", "torchscript"])
def test_the_refusal_says_why_and_nothing_else(tmp_path, kind):
    """The message is the file and the reason, never torch's advice to load it with ``weights_only=False``."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "model.pt"
    if kind == "torchscript":
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    else:
        payload = {"exec": Payload, "os.system": SystemPayload, "object": lambda _: FeaturizerConfig()}[kind](marker)
        torch.save({"format": "scannet-model", "metadata": {"x": payload}}, path)
    with pytest.raises(CheckpointError) as refused:
        load_model(path)
    assert str(refused.value) == f"{path}: {REFUSED}"
    assert "weights_only" not in str(refused.value)
    assert not marker.exists()
