"""The live epoch logger while the tracking server is down: the training never waits longer than ``wait_s``
(once), the epochs stay buffered and are logged in order, each exactly once, when the server answers again.
The server is simulated by the one call the logger makes (``runs._log_epoch``): down = it raises after a
delay, as MLflow's client does once its retries are spent."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from scannet_platform.tracking import runs

REPORT = {"homo": (27211.386, "meV")}


def record(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "epochs": 5,
        "train_loss": 1.0 / (epoch + 1),
        "val_mae": 0.5,
        "lr": 1e-3,
        "val_mae_homo": 0.1,
    }


class Server:
    def __init__(self) -> None:
        self.up = threading.Event()
        self.up.set()
        self.logged: list[int] = []
        self.calls = 0

    def log_epoch(self, client, run_id, rec, report) -> None:
        self.calls += 1
        if not self.up.is_set():
            time.sleep(0.2)
            raise ConnectionError("Max retries exceeded (Connection refused)")
        self.logged.append(int(rec["epoch"]) + 1)


@pytest.fixture()
def server(monkeypatch):
    fake = Server()
    monkeypatch.setattr(runs, "_log_epoch", fake.log_epoch)
    monkeypatch.setattr(runs, "MlflowClient", lambda uri: object())
    for name, value in runs.LIVE_HTTP_RETRIES.items():  # what the logger sets for http URIs, undone after
        monkeypatch.setenv(name, value)
    return fake


def test_up_the_epoch_is_logged_when_log_returns(server):
    logger = runs.EpochLogger("http://127.0.0.1:1", "run", REPORT, wait_s=5, retry_s=0.05)
    for epoch in range(3):
        logger.log(record(epoch))
        assert server.logged == list(range(1, epoch + 2))


def test_down_then_up_nothing_lost_nothing_twice_training_not_held(server, capsys):
    logger = runs.EpochLogger("http://127.0.0.1:1", "run", REPORT, wait_s=0.5, retry_s=0.05)
    logger.log(record(0))
    server.up.clear()  # the server goes down
    started = time.monotonic()
    logger.log(record(1))  # waits wait_s once ...
    first = time.monotonic() - started
    started = time.monotonic()
    for epoch in (2, 3):
        logger.log(record(epoch))  # ... then not at all
    later = time.monotonic() - started
    assert 0.4 < first < 2.0 and later < 0.1, (first, later)
    assert server.logged == [1] and server.calls > 2  # retried while down
    server.up.set()  # back
    assert logger.flush(timeout=10)
    logger.log(record(4))  # and log() waits for the server again
    assert server.logged == [1, 2, 3, 4, 5]
    out = capsys.readouterr().out
    assert out.count("has not answered") == 1 and out.count("answers again; logged epoch 2") == 1


def test_pickled_as_ray_ships_it_with_its_buffer(server):
    logger = runs.EpochLogger("http://127.0.0.1:1", "run", REPORT, wait_s=0.2, retry_s=0.05)
    server.up.clear()
    logger.log(record(0))
    copy = pickle.loads(pickle.dumps(logger))  # a fresh thread and lock; the buffered epoch comes along
    server.up.set()
    copy.log(record(1))
    assert copy.flush(timeout=10)
    assert logger.flush(timeout=10)
    assert sorted(server.logged) == [1, 1, 2]  # the original's sender logged its epoch 1 too: two loggers


def test_backfilled_epochs_carry_every_metric_a_live_one_has(tmp_path):
    """Epochs the live logger could not send (the server down until the controller ended) are logged by the
    driver from the history, with the time and rate of the records the callback kept in epochs.jsonl."""
    import cloudpickle
    import mlflow

    from scannet.train.run import DatasetInfo
    from scannet.train.run_folder import EPOCH_RECORDS
    from scannet_platform.train.driver import epoch_printer, reported_epochs

    dataset = DatasetInfo("qm9", tmp_path / "structures.parquet", {"homo": "eV"})
    callback = cloudpickle.loads(cloudpickle.dumps(epoch_printer(dataset, ("homo",), tmp_path / "epochs.log")))
    for epoch in (0, 1, 1):  # epoch 2 reported twice: re-run after a restart from the epoch-1 checkpoint
        callback.after_report(None, [record(epoch) | {"seconds": 2.0 + epoch, "train_per_s": 50.0 + epoch}], None)
    with open(tmp_path / EPOCH_RECORDS, "a") as handle:
        handle.write('{"epoch": 2, "secon')  # a line cut short by a crash
    reported = reported_epochs(tmp_path / EPOCH_RECORDS)
    assert sorted(reported) == [0, 1] and reported[1]["seconds"] == 3.0

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = runs.begin_run(tracking_uri=uri, experiment="unit", run_name="gap", run_dir=tmp_path, params={})
    history = [{**record(e), "val_mae_per_target": {"homo": 0.1}} for e in range(2)]  # no timing in the history
    client = mlflow.MlflowClient(uri)
    assert runs.log_missing_epochs(client, run_id, history, REPORT, reported) == 2
    assert [m.value for m in client.get_metric_history(run_id, "epoch_seconds")] == [2.0, 3.0]
    assert [m.value for m in client.get_metric_history(run_id, "train_structures_per_s")] == [50.0, 51.0]
    assert runs.log_missing_epochs(client, run_id, history, REPORT, reported) == 0  # nothing twice
