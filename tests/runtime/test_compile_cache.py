"""The persistent compilation cache: where it lives, how it is turned off, that it is used."""

from __future__ import annotations

import os

import jax
import pytest

from mnist_plus.runtime import compile_cache
from tests.helpers import read_bytes

# JAX logs cache writes and hits at debug level for these modules.
_JAX_LOG = {"JAX_DEBUG_LOG_MODULES": "jax._src.compiler,jax._src.compilation_cache"}


@pytest.fixture
def no_jax_setting(monkeypatch):
    """resolve_dir() as in a process where JAX's own cache folder is not set."""
    monkeypatch.setattr(compile_cache, "_jax_configured_dir", lambda: None)


def test_cache_lives_in_the_users_cache_folder_not_the_workdir(no_jax_setting):
    assert compile_cache.resolve_dir({"XDG_CACHE_HOME": "/x/cache"}) == "/x/cache/mnist_plus/jax"
    home = os.path.expanduser("~")
    assert compile_cache.resolve_dir({}) == os.path.join(home, ".cache", "mnist_plus", "jax")


def test_environment_variable_moves_or_disables_the_cache(no_jax_setting, tmp_path):
    env = {"XDG_CACHE_HOME": "/x/cache", "JAX_COMPILATION_CACHE_DIR": "/jax/own"}
    assert compile_cache.resolve_dir({**env, compile_cache.ENV: str(tmp_path)}) == str(tmp_path)
    assert compile_cache.resolve_dir({**env, compile_cache.ENV: "off"}) is None
    assert compile_cache.resolve_dir({**env, compile_cache.ENV: "OFF"}) is None
    # Unset: a cache folder the user already gave JAX is kept.
    assert compile_cache.resolve_dir(env) == "/jax/own"


def test_unwritable_cache_folder_warns_in_one_line_and_leaves_jax_alone(
        monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(compile_cache, "_result", [])
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # A folder below a regular file cannot be created, even by root.
    assert compile_cache.enable(str(blocker / "jax")) is None
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "compilation cache off" in err, err
    assert compile_cache.ENV in err
    assert updates == [("jax_enable_compilation_cache", False)]  # no folder, JAX's cache off
    # Only the first call acts: no second warning.
    assert compile_cache.enable(str(blocker / "jax")) is None
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_second_process_reads_the_first_ones_compiles_and_matches_it(cli, prepared_tiny,
                                                                   tmp_path):
    from tests.helpers import tiny_flags

    cache = tmp_path / "cache"
    env = {compile_cache.ENV: str(cache), **_JAX_LOG}
    first = cli.train(*tiny_flags(prepared_tiny, tmp_path / "a", "--epochs", "1"), env=env)
    assert first.returncode == 0, first.stderr
    written = sorted(os.listdir(cache))
    assert any(n.startswith("jit_train_step") and n.endswith("-cache") for n in written), written
    assert "Writing jit_train_step to persistent compilation cache" in first.stderr

    second = cli.train(*tiny_flags(prepared_tiny, tmp_path / "b", "--epochs", "1"), env=env)
    assert second.returncode == 0, second.stderr
    assert "Persistent compilation cache hit for 'jit_train_step'" in second.stderr
    assert "to persistent compilation cache" not in second.stderr  # compiled nothing new
    assert sorted(os.listdir(cache)) == written
    assert read_bytes(tmp_path / "a" / "metrics.jsonl") == read_bytes(
        tmp_path / "b" / "metrics.jsonl")


def test_off_turns_jax_cache_off_and_creates_no_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_cache, "_result", [])
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
    monkeypatch.setenv(compile_cache.ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compile_cache.enable() is None
    # Off even though JAX_COMPILATION_CACHE_DIR names a folder.
    assert updates == [("jax_enable_compilation_cache", False)]
    assert list(tmp_path.iterdir()) == []


def test_enable_caches_every_program_unless_the_user_set_thresholds(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_cache, "_result", [])
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    folder = str(tmp_path / "cache")
    assert compile_cache.enable(folder) == folder and os.path.isdir(folder)
    # The threshold the user set is kept; the size floor (none by default) is lifted.
    assert updates == [("jax_compilation_cache_dir", folder),
                       ("jax_persistent_cache_min_entry_size_bytes", -1)]
    assert os.listdir(folder) == []  # the write probe is gone
