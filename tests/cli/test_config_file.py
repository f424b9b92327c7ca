"""`--config FILE` (JSON, or Python with get_config()), its precedence under command-line
flags, its errors, and the effective config a run writes to workdir/config.json."""

import json
import os

import pytest

from mnist_plus import configs
from mnist_plus import benchmark as benchmark_cli
from mnist_plus import cli
from mnist_plus import config as config_lib
from mnist_plus import train
from mnist_plus.trainer import train_and_evaluate
from mnist_plus.model import build_model, param_count
from mnist_plus.training.state import abstract_state
from tests.helpers import REPO, tiny_config


def _config(*argv) -> config_lib.Config:
    return cli.config_from_args(cli.train_parser().parse_args(list(argv)))


def test_json_file_sets_fields(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "learning_rate": 0.02, "holdout": "sum9",
                                "progress": False}))
    config = _config("--config", str(path))
    assert (config.epochs, config.learning_rate, config.holdout, config.progress) == (
        3, 0.02, "sum9", False)
    assert config.width == config_lib.Config().width  # not in the file: the default


def test_python_file_with_get_config_returning_a_dict_or_an_object(tmp_path):
    as_dict = tmp_path / "d.py"
    as_dict.write_text("def get_config():\n    return {'width': 8, 'seed': 5}\n")
    assert (_config("--config", str(as_dict)).width, _config("--config", str(as_dict)).seed) == (
        8, 5)
    # An object with the fields as attributes (what an ml_collections ConfigDict offers,
    # through keys() and []; a plain namespace through its attributes).
    as_object = tmp_path / "o.py"
    as_object.write_text("import types\n"
                         "def get_config():\n"
                         "    return types.SimpleNamespace(width=12, loop='host')\n")
    config = _config("--config", str(as_object))
    assert (config.width, config.loop) == (12, "host")


def test_a_configdict_like_object_is_read_through_keys(tmp_path):
    class ConfigDictLike:  # keys() and [] but no Mapping base class, like ConfigDict
        def __init__(self, **kw):
            self._fields = kw

        def keys(self):
            return self._fields.keys()

        def __getitem__(self, key):
            return self._fields[key]

    assert configs._as_mapping("x.py", ConfigDictLike(epochs=2)) == {"epochs": 2}


def test_command_line_flags_override_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "width": 8, "progress": False}))
    # Before or after --config on the command line: the flag wins either way.
    for argv in (["--config", str(path), "--epochs", "5", "--progress"],
                 ["--epochs", "5", "--progress", "--config", str(path)]):
        config = _config(*argv)
        assert (config.epochs, config.width, config.progress) == (5, 8, True)


def test_benchmark_shares_config_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"width": 8}))
    args = benchmark_cli.benchmark_parser().parse_args(["--config", str(path)])
    assert cli.config_from_args(args).width == 8


@pytest.mark.parametrize("name", configs.NAMES)
def test_a_named_config_is_the_same_by_preset_or_by_file(name):
    path = os.path.join(REPO, "mnist_plus", "configs", f"{name}.py")
    assert _config("--preset", name) == _config("--config", path) == configs.get(name)
    assert configs.get(name).epochs == {"fast": 2, "speedrun": 1}.get(name, 10)


def test_config_file_overrides_the_preset_and_flags_override_both(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"width": 12, "epochs": 4}))
    config = _config("--preset", "lean", "--config", str(path), "--epochs", "5")
    assert (config.width, config.epochs, config.late_width) == (12, 5, 0)  # lean's late width


def test_an_unknown_preset_is_one_line_naming_the_closest(capsys):
    assert train.main(["--preset", "leen"]) == 2
    assert "--preset 'leen' is unknown (did you mean 'lean'?)" in capsys.readouterr().err


def test_the_conv_stem_preset_is_the_earlier_default_model_and_given_fields_win():
    # The model the experiments' older tables were measured on (README: 16,429 parameters).
    config = configs.get("conv_stem")
    assert (config.stem, config.extra_convs) == ("conv", 0)
    assert param_count(abstract_state(config).params) == 16429
    assert configs.get("conv_stem", extra_convs=2, seed=3).extra_convs == 2
    assert configs.get("default") == config_lib.Config()


def test_presets_name_every_field_the_default_has_changed_since_they_were_measured():
    """A preset keeps its published figures only if it names the recipe fields that were
    the defaults when it was measured: `lean` is the default until 2026-11-30, and the
    older presets are built on it."""
    lean = configs.get("lean")
    assert param_count(abstract_state(lean).params) == 21213
    assert (lean.late_width, lean.label_smoothing, lean.precise_bn) == (0, 0.0, 0)
    assert (lean.augment_rotate, lean.augment_scale, lean.augment_shear) == (0.0, 0.0, 0.0)
    default = config_lib.Config()
    assert param_count(abstract_state(default).params) == 30653
    recipe = {k: v for k, v in configs.preset_fields("lean").items()
              if k not in ("stem", "extra_convs")}
    for name in ("conv_stem", "fast"):
        fields = configs.preset_fields(name)
        assert {k: fields.get(k) for k in recipe} == recipe, name


@pytest.mark.parametrize("name, fields, params", [
    ("wider.py", {"stem": "conv", "stem_width": 8, "width": 20, "extra_convs": 2,
                  "late_width": 0, "augment_rotate": 0.0, "augment_scale": 0.0,
                  "augment_shear": 0.0, "label_smoothing": 0.0, "precise_bn": 0}, 26717),
    ("accurate.py", {"stem": "conv", "stem_width": 8, "width": 32, "extra_convs": 2,
                     "late_width": 0, "augment_rotate": 10.0, "augment_scale": 0.1,
                     "augment_shear": 0.1, "label_smoothing": 0.0, "precise_bn": 0}, 55925),
    ("late_wide.py", {"stem": "patch", "extra_convs": 2, "late_width": 32,
                      "augment_rotate": 10.0, "augment_scale": 0.1, "augment_shear": 0.1,
                      "label_smoothing": 0.0, "precise_bn": 0}, 30653),
    ("lean.py", {**configs.preset_fields("lean")}, 21213),
])
def test_the_measured_config_files_hold_the_measured_fields_and_build(name, fields, params):
    # The fields their docstrings' figures were measured with (README, "Over five seeds").
    values = configs.load_file(os.path.join(REPO, "mnist_plus", "configs", name))
    assert values == fields
    config = config_lib.validate(config_lib.Config(**values))
    assert param_count(abstract_state(config).params) == params
    assert build_model(config).extra_convs == 2


@pytest.mark.parametrize("name, text, expected", [
    ("c.json", '{"epoch": 3}', "unknown key 'epoch' (did you mean 'epochs'?)"),
    ("c.json", '{"zzz": 3}', "unknown key 'zzz' (see --help for the fields)"),
    ("c.json", '{"epochs": "3"}', "epochs must be an integer, not '3' (str)"),
    ("c.json", '{"epochs": 3.0}', "epochs must be an integer, not 3.0 (float)"),
    ("c.json", '{"progress": 1}', "progress must be true or false, not 1 (int)"),
    ("c.json", '{"learning_rate": null}', "learning_rate must be a number, not None"),
    ("c.json", '{"epochs": 3', "is not valid JSON"),
    ("c.json", '[1, 2]', "must hold a JSON object of Config fields, not a list"),
    ("c.py", "x = 1\n", "defines no get_config()"),
    ("c.py", "def get_config(:\n", "failed to run (SyntaxError"),
    ("c.py", "def get_config():\n    return 1 / 0\n", "get_config() failed (ZeroDivisionError"),
    ("c.yaml", "epochs: 3\n", "use a .json file (an object of Config fields) or a .py file"),
])
def test_bad_config_files_are_one_line_usage_errors(tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    workdir = tmp_path / "runs"
    assert train.main(["--config", str(path), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(path) in err and expected in err
    assert not workdir.exists()  # found before anything is written


def test_a_missing_config_file_is_named(tmp_path, capsys):
    path = tmp_path / "nope.json"
    assert train.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot read config file {path} (No such file or directory)\n"


def test_values_from_a_file_are_range_checked_like_flags(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"epochs": 0}')
    assert train.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: --epochs 0 is invalid")
    path.write_text('{"late_width": -8}')
    assert train.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: --late-width -8 is invalid: it must be 0")


def test_run_writes_the_effective_config_and_it_reads_back(prepared_tiny, tmp_path):
    config = tiny_config(prepared_tiny, epochs=1)
    workdir = tmp_path / "runs"
    train_and_evaluate(config, str(workdir), log=lambda s: None)
    written = json.loads((workdir / "config.json").read_text())
    assert written == config_lib.to_dict(config)
    assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]  # atomic: no leftovers
    assert _config("--config", str(workdir / "config.json")) == config
    # TensorBoard's HPARAMS tab: the config with the final test metrics.
    from tests.tools.test_report import read_scalars

    hparams = read_scalars(str(workdir / "tensorboard" / "hparams"))
    final = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    # float32 on the wire (TensorBoard's simple_value): equal to the metric rounded to it.
    import numpy as np

    assert hparams["hparams/test_sum_accuracy"][-1] == (
        final["step"], float(np.float32(final["test_sum_accuracy"])))


def test_a_stored_config_keeps_its_values_and_ignores_fields_it_does_not_know():
    import dataclasses
    stored = dataclasses.asdict(config_lib.Config(augment_rotate=7.0))
    assert config_lib.from_dict(stored).augment_rotate == 7.0
    assert config_lib.from_dict({**stored, "from_a_newer_version": 1}) == config_lib.Config(
        augment_rotate=7.0)
