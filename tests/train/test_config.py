import pytest

from morphface.train import ComponentConfig, ConfigError, TrainConfig, load_config, save_config

from .helpers import toy_config


def test_yaml_round_trip(tmp_path, write_yaml):
    raw = toy_config(tmp_path / "run", betas=[0.0, 0.99], grad_clip=1.5, ema_decay=0.999,
                     network_lr={"discriminator": 4e-4})
    cfg = load_config(write_yaml(raw))
    assert cfg.betas == (0.0, 0.99) and isinstance(cfg.betas, tuple)
    assert cfg.pipeline == ComponentConfig("toy_gan", {"channels": 8, "disc_channels": 8})
    assert cfg.network_lr == {"discriminator": 4e-4}
    save_config(cfg, tmp_path / "again.yaml")
    again = load_config(tmp_path / "again.yaml")
    assert again == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_defaults_are_the_papers(tmp_path):
    cfg = TrainConfig.from_dict({"output_dir": str(tmp_path), "pipeline": {"name": "p"},
                                 "data": {"name": "d"}})
    assert cfg.lr == 2e-4 and cfg.betas == (0.5, 0.999)
    assert cfg.ema_decay == 0 and cfg.amp == "off" and cfg.grad_clip is None


def test_unknown_field_is_named(tmp_path, write_yaml):
    bad = toy_config(tmp_path)
    bad["stpes"] = 10
    with pytest.raises(ConfigError, match=r"unknown field 'stpes'.*did you mean 'steps'"):
        load_config(write_yaml(bad))
    bad = toy_config(tmp_path)
    bad["pipeline"]["cfg"] = {}
    with pytest.raises(ConfigError, match=r"unknown field 'pipeline.cfg'"):
        load_config(write_yaml(bad))


def test_bad_values_are_named(tmp_path):
    base = toy_config(tmp_path)
    cases = [({"steps": "ten"}, "'steps' must be an integer"), ({"steps": 0}, "'steps' must be >= 1"),
             ({"amp": "fp8"}, "'amp' must be one of"), ({"betas": [0.5]}, "'betas' must be a list of 2"),
             ({"deterministic": "yes"}, "'deterministic' must be true or false"),
             ({"ema_decay": 1.0}, "'ema_decay' must be in"),
             ({"pipeline": "toy"}, "'pipeline' must be a mapping")]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict({**base, **change})
    without = dict(base)
    del without["data"]
    with pytest.raises(ConfigError, match="missing required field 'data'"):
        TrainConfig.from_dict(without)


def test_exponent_floats_from_yaml(tmp_path):
    # PyYAML reads "2e-4" (no dot) as a string; the config accepts it for float fields.
    path = tmp_path / "c.yaml"
    path.write_text(f"output_dir: {tmp_path}\npipeline: {{name: toy_gan}}\ndata: {{name: toy_shapes}}\n"
                    "lr: 2e-4\n")
    assert load_config(path).lr == 2e-4
