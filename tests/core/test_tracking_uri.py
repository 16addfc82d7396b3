"""MLflow keeps its tracking URI process-wide: two threads logging to the loop's store must
not pull it from under each other (a promotion once logged into a fresh, empty store)."""

import threading

import mlflow
import pytest

from mlops_loop.core.tracking import mlflow_uri


def test_a_block_ending_in_one_thread_keeps_the_uri_for_another(tmp_path):
    outer = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    entered, main_left, seen = threading.Event(), threading.Event(), {}

    def step() -> None:
        with mlflow_uri(uri):
            entered.set()
            main_left.wait(timeout=10)
            seen["after_the_other_left"] = mlflow.get_tracking_uri()

    t = threading.Thread(target=step)
    with mlflow_uri(uri):
        t.start()
        entered.wait(timeout=10)
    main_left.set()  # this block has ended while the step's block is still open
    t.join(timeout=10)
    assert seen["after_the_other_left"] == uri
    assert mlflow.get_tracking_uri() == outer  # restored once the last block ended


def test_another_store_waits_and_one_thread_cannot_nest_two(tmp_path):
    outer = mlflow.get_tracking_uri()
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    order: list[str] = []
    a_in = threading.Event()

    def other_store() -> None:
        a_in.wait()
        with mlflow_uri(b):
            order.append(f"b:{mlflow.get_tracking_uri() == b}")

    t = threading.Thread(target=other_store)
    t.start()
    with mlflow_uri(a):
        a_in.set()
        t.join(timeout=0.5)
        assert t.is_alive()  # it waits for the block on `a` to end
        with pytest.raises(RuntimeError, match="cannot open inside it"):
            with mlflow_uri(b):  # the same thread would wait for itself
                pass
        with mlflow_uri(a):  # the same store nests
            assert mlflow.get_tracking_uri() == a
        assert mlflow.get_tracking_uri() == a
        order.append("a:done")
    t.join(timeout=10)
    assert order == ["a:done", "b:True"]
    assert mlflow.get_tracking_uri() == outer


def test_a_uri_is_shown_without_its_credentials():
    from mlops_loop.core.tracking import redact_uri

    assert redact_uri("sqlite:////srv/state/mlflow.db") == "sqlite:////srv/state/mlflow.db"
    assert redact_uri("https://loop:p4ss@mlflow:5000") == "https://loop:***@mlflow:5000"
    assert redact_uri("https://mlflow/x?token=abc&team=a") == "https://mlflow/x?token=***&team=***"
    assert redact_uri("http://loop@mlflow:5000") == "http://loop@mlflow:5000"
