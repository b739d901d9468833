"""The config: precedence, validation, and the names users type."""

from __future__ import annotations

import pytest
from sycri import config
from sycri.config import ConfigError


def write(tmp_path, text: str) -> str:
    p = tmp_path / "sycri.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_are_the_documented_paths():
    cfg = config.load(env={})
    assert cfg.socket == "/run/sycri/sycri.sock"
    assert cfg.root_dir == "/var/lib/sycri"
    assert cfg.run_dir == "/run/sycri"
    assert cfg.default_runtime == "runc"
    assert cfg.runtimes["runc"].binary == "runc"
    assert cfg.images.squashfs_compression == "zstd"


def test_file_then_env_then_flags(tmp_path):
    path = write(tmp_path, "root_dir: /srv/file\nlog:\n  level: warning\ncni:\n  conf_dir: /c\n")
    cfg = config.load(path, env={})
    assert (cfg.root_dir, cfg.log.level, cfg.cni.conf_dir) == ("/srv/file", "warning", "/c")
    env = {"SYCRI_ROOT_DIR": "/srv/env", "SYCRI_LOG_LEVEL": "error"}
    cfg = config.load(path, env=env)
    assert (cfg.root_dir, cfg.log.level) == ("/srv/env", "error")
    cfg = config.load(path, env=env, overrides={"root_dir": "/srv/flag"})
    assert (cfg.root_dir, cfg.log.level) == ("/srv/flag", "error")


def test_lists_and_numbers_from_text():
    cfg = config.load(
        env={"SYCRI_CNI_BIN_DIRS": "/a,/b", "SYCRI_IMAGES_MAX_CONCURRENT_DOWNLOADS": "7"}
    )
    assert cfg.cni.bin_dirs == ("/a", "/b")
    assert cfg.images.max_concurrent_downloads == 7


def test_runtime_handlers_from_file(tmp_path):
    path = write(
        tmp_path,
        "default_runtime: fast\nruntimes:\n  fast: {binary: /usr/bin/runc, root: /run/fast}\n",
    )
    cfg = config.load(path, env={})
    assert cfg.runtimes["fast"].binary == "/usr/bin/runc"
    assert str(cfg.runtime_root("fast")) == "/run/fast"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sokcet: /x\n", "unknown key 'sokcet'"),
        ("log:\n  colour: red\n", "unknown key 'log.colour'"),
        ("root_dir: 5\n", "root_dir: expected a string"),
        ("root_dir: relative/dir\n", "root_dir: must be an absolute path"),
        ("cgroup_driver: openrc\n", "cgroup_driver: 'openrc' is not one of"),
        ("images:\n  max_concurrent_downloads: 0\n", "must be greater than zero"),
        ("images:\n  max_concurrent_downloads: many\n", "expected a number"),
        ("metrics_address: nowhere\n", "metrics_address: expected HOST:PORT"),
        ("default_runtime: crun\n", "default_runtime: 'crun' is not among runtimes (runc)"),
        ("cni:\n  default_subnet: 10.0.0.0/31\n", "too small"),
        ("- a list\n", "top level must be a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
        ("conmon_cgroup: sycri\n", "conmon_cgroup: 'sycri' is not 'pod', an absolute cgroup"),
        ("conmon_cgroup: /a/../b\n", "conmon_cgroup: '/a/../b' is not 'pod'"),
        ("host_root: host\n", "host_root: must be an absolute path"),
        ("pids_limit: -5\n", "pids_limit: -5 is negative"),
        ("images:\n  mount_idle_seconds: -1\n", "images.mount_idle_seconds: -1.0 is negative"),
        (
            "cgroup_driver: systemd\nconmon_cgroup: /monitors\n",
            "conmon_cgroup: '/monitors' is a path; the systemd driver needs 'pod' or a slice",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(write(tmp_path, text), env={})


def test_unknown_environment_variable_is_refused():
    with pytest.raises(ConfigError, match="SYCRI_SOKCET"):
        config.load(env={"SYCRI_SOKCET": "/x"})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(str(tmp_path / "absent.yaml"), env={})


def test_names_are_derived_from_keys():
    assert config.flag_name("cni.conf_dir") == "--cni-conf-dir"
    assert config.env_name("cni.conf_dir") == "SYCRI_CNI_CONF_DIR"
    assert "streaming.address" in set(config.keys())


def test_every_key_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [k for k in set(config.keys()) if f"`{k}`" not in readme]
    assert missing == []
