"""`serving:` in the loop YAML: defaults, paths taken from the config file's folder, typos
refused."""

from __future__ import annotations

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.serving_config import ServingConfig
from tests.conftest import write_loop


def test_defaults_bind_loopback_and_log_under_the_state(tmp_path, demo_frames):
    config = load_config(write_loop(tmp_path, demo_frames[0].head(50)))
    assert config.serving == ServingConfig()
    assert (config.serving.host, config.serving.port, config.serving.workers) == (
        "127.0.0.1",
        8080,
        1,
    )
    assert config.serving.wal_dir(config.state_dir) == config.state_dir / "serving" / "wal"


def test_a_relative_log_dir_is_taken_from_the_config_folder(tmp_path, demo_frames):
    path = write_loop(
        tmp_path, demo_frames[0].head(50), **{"serving.log_dir": "wal", "serving.shadow": True}
    )
    config = load_config(path)
    assert config.serving.log_dir == (tmp_path / "wal").resolve()
    assert config.serving.wal_dir(config.state_dir) == config.serving.log_dir
    assert config.serving.shadow is True


@pytest.mark.parametrize(
    "key, value, named",
    [("serving.prot", 1, "serving.prot"), ("serving.max_rows", 0, "serving.max_rows")],
)
def test_a_bad_serving_setting_is_named(tmp_path, demo_frames, key, value, named):
    with pytest.raises(InvalidConfigError, match=named):
        load_config(write_loop(tmp_path, demo_frames[0].head(50), **{key: value}))
