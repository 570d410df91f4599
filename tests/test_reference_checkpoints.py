"""The authors' released checkpoints (ermongroup/ncsn, ermongroup/ncsnv2) in this repository.

The reference files are built here from the reference code's documented layout, written out
independently of ``ncsn.nets.reference`` (which holds the mapping under test): the parameter
names and shapes each reference module registers, the list each runner saves, and a functional
forward pass with the reference's semantics evaluated on the reference-named weights.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, run_cli
from fakedata import write_cifar10

from ncsn.nets.ncsnv2 import NCSNv2, NCSNv2Deeper
from ncsn.nets.reference import read_states, to_ours
from ncsn.nets.refinenet import CondRefineNetDilated
from ncsn.workflow.config import ConfigError
from ncsn.workflow.reference import checkpoint_to_reference, reference_to_checkpoint, reference_yml_text
from ncsn.workflow.reference_config import read_reference_config


# -- the reference layout, from the reference code -------------------------------------------------
# (in, out, resample, dilation) of the two blocks of each resN: models/cond_refinenet_dilated.py and
# models/ncsnv2.py (NCSNv2: res1..res4; NCSNv2Deeper: res1..res5).
def res_specs(ngf: int, deeper: bool):
    if not deeper:
        return [
            [(ngf, ngf, None, None), (ngf, ngf, None, None)],
            [(ngf, 2 * ngf, "down", None), (2 * ngf, 2 * ngf, None, None)],
            [(2 * ngf, 2 * ngf, "down", 2), (2 * ngf, 2 * ngf, None, 2)],
            [(2 * ngf, 2 * ngf, "down", 4), (2 * ngf, 2 * ngf, None, 4)],
        ]
    return [
        [(ngf, ngf, None, None), (ngf, ngf, None, None)],
        [(ngf, 2 * ngf, "down", None), (2 * ngf, 2 * ngf, None, None)],
        [(2 * ngf, 2 * ngf, "down", None), (2 * ngf, 2 * ngf, None, None)],
        [(2 * ngf, 4 * ngf, "down", 2), (4 * ngf, 4 * ngf, None, 2)],
        [(4 * ngf, 4 * ngf, "down", 4), (4 * ngf, 4 * ngf, None, 4)],
    ]


def refine_specs(ngf: int, deeper: bool):
    """(in_planes, features, start, end) of refine1, refine2, ..."""
    if not deeper:
        return [([2 * ngf], 2 * ngf, True, False), ([2 * ngf] * 2, 2 * ngf, False, False),
                ([2 * ngf] * 2, ngf, False, False), ([ngf] * 2, ngf, False, True)]  # fmt: skip
    return [([4 * ngf], 4 * ngf, True, False), ([4 * ngf] * 2, 2 * ngf, False, False),
            ([2 * ngf] * 2, 2 * ngf, False, False), ([2 * ngf] * 2, ngf, False, False),
            ([ngf] * 2, ngf, False, True)]  # fmt: skip


def reference_layout(family: str, ngf: int, channels: int, num_classes: int, deeper: bool = False) -> dict:
    """{name: shape} of the reference model's state_dict (without DataParallel's ``module.``)."""
    shapes = {}

    def norm(prefix, f):
        if family == "ncsn":  # ConditionalInstanceNorm2dPlus: one embedding of gamma, alpha, beta
            shapes[f"{prefix}.embed.weight"] = (num_classes, 3 * f)
        else:  # InstanceNorm2dPlus
            for p in ("alpha", "gamma", "beta"):
                shapes[f"{prefix}.{p}"] = (f,)

    def conv(prefix, cout, cin, k, bias=True):
        shapes[f"{prefix}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{prefix}.bias"] = (cout,)

    if family == "ncsnv2":
        shapes["sigmas"] = (num_classes,)
    conv("begin_conv", ngf, channels, 3)
    norm("normalizer", ngf)
    conv("end_conv", channels, ngf, 3)
    for s, blocks in enumerate(res_specs(ngf, deeper)):
        for b, (cin, cout, resample, dil) in enumerate(blocks):
            p = f"res{s + 1}.{b}"
            if resample == "down" and dil is None:  # ConvMeanPool wraps conv2 and the 1x1 shortcut
                conv(f"{p}.conv1", cin, cin, 3)
                norm(f"{p}.normalize2", cin)
                conv(f"{p}.conv2.conv", cout, cin, 3)
                conv(f"{p}.shortcut.conv", cout, cin, 1)
            elif resample == "down":
                conv(f"{p}.conv1", cin, cin, 3)
                norm(f"{p}.normalize2", cin)
                conv(f"{p}.conv2", cout, cin, 3)
                conv(f"{p}.shortcut", cout, cin, 3)
            else:
                conv(f"{p}.conv1", cout, cin, 3)
                norm(f"{p}.normalize2", cout)
                conv(f"{p}.conv2", cout, cout, 3)
                assert cin == cout
            norm(f"{p}.normalize1", cin)
    for j, (in_planes, feat, start, end) in enumerate(refine_specs(ngf, deeper)):
        p = f"refine{j + 1}"

        def rcu(prefix, f, n_blocks):
            for i in range(1, n_blocks + 1):
                for k in (1, 2):
                    if family == "ncsn":
                        norm(f"{prefix}.{i}_{k}_norm", f)
                    conv(f"{prefix}.{i}_{k}_conv", f, f, 3, bias=False)

        for i, c in enumerate(in_planes):
            rcu(f"{p}.adapt_convs.{i}", c, 2)
        rcu(f"{p}.output_convs", feat, 3 if end else 1)
        if not start:
            for i, c in enumerate(in_planes):
                conv(f"{p}.msf.convs.{i}", feat, c, 3)
            if family == "ncsn":
                for i, c in enumerate(in_planes):
                    norm(f"{p}.msf.norms.{i}", c)
        for i in range(2):
            conv(f"{p}.crp.convs.{i}", feat, feat, 3, bias=False)
        if family == "ncsn":
            for i in range(2):
                norm(f"{p}.crp.norms.{i}", feat)
    return shapes


def geometric(begin: float, end: float, n: int) -> torch.Tensor:
    return torch.tensor(np.exp(np.linspace(math.log(begin), math.log(end), n))).float()


def fake_weights(shapes: dict, seed: int, sigmas: torch.Tensor | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name == "sigmas":
            out[name] = sigmas.clone()
        elif name.endswith(("alpha", "gamma")) or name.endswith("embed.weight"):
            out[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(np.prod(shape[1:])))
            out[name] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return out


def reference_file(family: str, model: dict, ema: dict | None = None, epoch: int = 7, step: int = 300000) -> list:
    """The list the reference runners torch.save (DataParallel's ``module.`` on the model keys)."""
    n = len([k for k in model if k != "sigmas"])
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": list(range(n))}]}
    states = [{f"module.{k}": v for k, v in model.items()}, optimizer]
    if family == "ncsnv2":
        states += [epoch, step]
        if ema is not None:
            states.append(ema)
    return states


def ncsn_yml(ngf=128, num_classes=10, dataset="CIFAR10"):
    """configs/anneal.yml of ermongroup/ncsn, CIFAR-10 block."""
    return {
        "training": {"batch_size": 128, "n_epochs": 500000, "n_iters": 200001, "ngpu": 1, "snapshot_freq": 5000,
                     "algo": "dsm", "anneal_power": 2.0},
        "data": {"dataset": dataset, "image_size": 32, "channels": 3, "logit_transform": False, "random_flip": True},
        "model": {"sigma_begin": 1, "sigma_end": 0.01, "num_classes": num_classes, "batch_norm": False, "ngf": ngf},
        "optim": {"weight_decay": 0.0, "optimizer": "Adam", "lr": 0.001, "beta1": 0.9, "amsgrad": False},
    }  # fmt: skip


def ncsnv2_yml(ngf=128, num_classes=232, n_steps_each=5):
    """configs/cifar10.yml of ermongroup/ncsnv2."""
    return {
        "training": {"batch_size": 128, "n_epochs": 500000, "n_iters": 300001, "snapshot_freq": 5000,
                     "snapshot_sampling": True, "anneal_power": 2, "log_all_sigmas": False},
        "sampling": {"batch_size": 100, "data_init": False, "step_lr": 0.0000062, "n_steps_each": n_steps_each,
                     "ckpt_id": 300000, "final_only": True, "fid": False, "denoise": True, "num_samples4fid": 10000,
                     "inpainting": False, "interpolation": False, "n_interpolations": 15},
        "data": {"dataset": "CIFAR10", "image_size": 32, "channels": 3, "logit_transform": False,
                 "uniform_dequantization": False, "gaussian_dequantization": False, "random_flip": True,
                 "rescaled": False, "num_workers": 4},
        "model": {"sigma_begin": 50, "num_classes": num_classes, "ema": True, "ema_rate": 0.999, "spec_norm": False,
                  "sigma_dist": "geometric", "sigma_end": 0.01, "normalization": "InstanceNorm++",
                  "nonlinearity": "elu", "ngf": ngf},
        "optim": {"weight_decay": 0.0, "optimizer": "Adam", "lr": 0.0001, "beta1": 0.9, "amsgrad": False,
                  "eps": 0.00000001},
    }  # fmt: skip


def namespace(d: dict) -> argparse.Namespace:
    """The config as the reference's main.py holds it (and dumps it into config.yml)."""
    return argparse.Namespace(**{k: namespace(v) if isinstance(v, dict) else v for k, v in d.items()})


def write_reference(tmp_path, family: str, ngf: int, num_classes: int, name: str, with_ema: bool = True):
    """(checkpoint path, yml path, reference model dict, ema dict) of a fake release."""
    yml = ncsn_yml(ngf, num_classes) if family == "ncsn" else ncsnv2_yml(ngf, num_classes, n_steps_each=1)
    sigmas = geometric(yml["model"]["sigma_begin"], yml["model"]["sigma_end"], num_classes)
    shapes = reference_layout(family, ngf, 3, num_classes)
    model = fake_weights(shapes, 0, sigmas)
    ema = None
    if family == "ncsnv2" and with_ema:
        ema = {k: v for k, v in fake_weights(shapes, 1, sigmas).items() if k != "sigmas"}  # parameters only
    ckpt, cfg = tmp_path / f"{name}.pth", tmp_path / f"{name}.yml"
    torch.save(reference_file(family, model, ema), ckpt)
    cfg.write_text(yaml.safe_dump(yml))
    return ckpt, cfg, model, ema


# -- layout, mapping and round trip at full width ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family, n_params, n_keys", [("ncsn", 30_117_635, 173), ("ncsnv2", 29_694_083, 154)])
def test_full_width_cifar10_release_converts_every_key_and_round_trips(family, n_params, n_keys, tmp_path):
    num_classes = 10 if family == "ncsn" else 232
    shapes = reference_layout(family, 128, 3, num_classes)
    assert len(shapes) == n_keys
    assert sum(math.prod(s) for k, s in shapes.items() if k != "sigmas") == n_params
    ckpt_path, yml_path, model, ema = write_reference(tmp_path, family, 128, num_classes, "release")

    ckpt = reference_to_checkpoint(ckpt_path, yml_path, reference=family)
    sd = ckpt["state_dict"]
    net_keys = [k for k in sd if k.startswith("net.")]
    assert len(net_keys) == len(shapes) + (family == "ncsn")  # NCSN: our sigmas buffer is added
    assert sum(sd[k].numel() for k in net_keys if k != "net.sigmas") == n_params
    # every reference value sits in exactly one of our keys (the random values are all distinct)
    ours = sorted(float(sd[k].double().sum()) for k in net_keys if k != "net.sigmas")
    theirs = sorted(float(v.double().sum()) for k, v in model.items() if k != "sigmas")
    assert ours == theirs
    cfg = ckpt["hyper_parameters"]["config"]
    assert cfg["model"]["ngf"] == 128 and cfg["sigmas"]["num_scales"] == num_classes
    assert torch.equal(
        sd["net.sigmas"], geometric(cfg["sigmas"]["sigma_begin"], cfg["sigmas"]["sigma_end"], num_classes)
    )
    if family == "ncsnv2":
        assert any(k.startswith("ema.module.") for k in sd) and cfg["optim"]["ema_decay"] == 0.999
        assert cfg["sampler"]["n_steps_each"] == 1 and cfg["sampler"]["step_lr"] == 6.2e-6 and cfg["sampler"]["denoise"]
        assert ckpt["global_step"] == 300000
    else:
        assert not any(k.startswith("ema.") for k in sd) and cfg["optim"]["ema_decay"] is None
        assert cfg["sampler"]["n_steps_each"] == 100 and cfg["sampler"]["step_lr"] == 2e-5

    # back to the reference layout: the identity on every model tensor, the EMA shadow, epoch and step
    states, yml = checkpoint_to_reference(ckpt)
    assert len(states) == (2 if family == "ncsn" else 5)
    assert list(states[0]) and all(k.startswith("module.") for k in states[0])
    back = {k[len("module.") :]: v for k, v in states[0].items()}
    assert set(back) == set(model) and all(torch.equal(back[k], model[k]) for k in model)
    if family == "ncsnv2":
        assert states[2:4] == [7, 300000]
        assert set(states[4]) == set(ema) and all(torch.equal(states[4][k], ema[k]) for k in ema)
        assert yml["model"]["ema"] and yml["sampling"]["n_steps_each"] == 1
    assert yml["model"]["num_classes"] == num_classes and yml["model"]["ngf"] == 128
    assert yml["data"]["dataset"] == "CIFAR10"
    # the .yml as written for the reference code (NCSN: its log folder's Namespace dump) reads back
    (tmp_path / "back.yml").write_text(reference_yml_text(yml, family))
    assert read_reference_config(tmp_path / "back.yml") == yml
    assert len(states[1]["param_groups"][0]["params"]) == len([k for k in model if k != "sigmas"])


# -- the converted network computes what the reference network computes -----------------------------
def _norm_pp(w: dict, prefix: str, x: torch.Tensor, y: torch.Tensor, family: str) -> torch.Tensor:
    """CIN++ (NCSN, embed rows [gamma | alpha | beta] of level y) or IN++ (NCSNv2)."""
    means = x.mean(dim=(2, 3))
    means = (means - means.mean(-1, keepdim=True)) / torch.sqrt(means.var(-1, keepdim=True) + 1e-5)
    h = F.instance_norm(x, eps=1e-5)
    if family == "ncsn":
        gamma, alpha, beta = w[f"{prefix}.embed.weight"][y].chunk(3, dim=-1)
    else:
        n = x.shape[0]
        gamma, alpha, beta = (w[f"{prefix}.{p}"].expand(n, -1) for p in ("gamma", "alpha", "beta"))
    h = h + means[..., None, None] * alpha[..., None, None]
    return gamma[..., None, None] * h + beta[..., None, None]


def _conv(w, prefix, x, dilation=1):
    k = w[f"{prefix}.weight"].shape[-1]
    return F.conv2d(x, w[f"{prefix}.weight"], w.get(f"{prefix}.bias"), padding=dilation * (k // 2), dilation=dilation)


def _subgrid_mean(x):
    return (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2] + x[:, :, 1::2, 1::2]) / 4.0


def reference_forward(w: dict, x: torch.Tensor, y: torch.Tensor, family: str, ngf: int, deeper: bool = False):
    """The forward pass of CondRefineNetDilated / NCSNv2(Deeper) on reference-named weights."""
    act = F.elu

    def norm(prefix, h):
        return _norm_pp(w, prefix, h, y, family)

    def rcu(prefix, h, n_blocks):
        for i in range(1, n_blocks + 1):
            residual = h
            for k in (1, 2):
                if family == "ncsn":
                    h = norm(f"{prefix}.{i}_{k}_norm", h)
                h = _conv(w, f"{prefix}.{i}_{k}_conv", act(h))
            h = h + residual
        return h

    h = _conv(w, "begin_conv", 2 * x - 1.0)
    layers = []
    for s, blocks in enumerate(res_specs(ngf, deeper)):
        for b, (_cin, _cout, resample, dil) in enumerate(blocks):
            p = f"res{s + 1}.{b}"
            d = dil or 1
            out = _conv(w, f"{p}.conv1", act(norm(f"{p}.normalize1", h)), d)
            out = act(norm(f"{p}.normalize2", out))
            if resample == "down" and dil is None:
                out = _subgrid_mean(_conv(w, f"{p}.conv2.conv", out))
                short = _subgrid_mean(_conv(w, f"{p}.shortcut.conv", h))
            else:
                out = _conv(w, f"{p}.conv2", out, d)
                short = _conv(w, f"{p}.shortcut", h, d) if resample == "down" else h
            h = short + out
        layers.append(h)
    prev = None
    for j, (_in_planes, _feat, start, end) in enumerate(refine_specs(ngf, deeper)):
        p = f"refine{j + 1}"
        feat = layers[len(layers) - 1 - j]
        xs = [feat] if prev is None else [feat, prev]
        hs = [rcu(f"{p}.adapt_convs.{i}", xi, 2) for i, xi in enumerate(xs)]
        if start:
            h = hs[0]
        else:
            h = 0
            for i, hi in enumerate(hs):
                if family == "ncsn":
                    hi = norm(f"{p}.msf.norms.{i}", hi)
                h = h + F.interpolate(
                    _conv(w, f"{p}.msf.convs.{i}", hi), size=feat.shape[2:], mode="bilinear", align_corners=True
                )
        h = act(h)
        path = h
        for i in range(2):
            if family == "ncsn":
                path = norm(f"{p}.crp.norms.{i}", path)
            pool = F.avg_pool2d if family == "ncsn" else F.max_pool2d
            path = _conv(w, f"{p}.crp.convs.{i}", pool(path, 5, 1, 2))
            h = path + h
        prev = rcu(f"{p}.output_convs", h, 3 if end else 1)
    out = _conv(w, "end_conv", act(norm("normalizer", prev)))
    if family == "ncsnv2":
        out = out / w["sigmas"][y].view(-1, 1, 1, 1)
    return out


@pytest.mark.parametrize(
    "family, net_cls, deeper",
    [("ncsn", CondRefineNetDilated, False), ("ncsnv2", NCSNv2, False), ("ncsnv2", NCSNv2Deeper, True)],
)
def test_converted_network_output_equals_the_reference_forward(family, net_cls, deeper):
    ngf, num_classes = 8, 5
    sigmas = geometric(20.0, 0.05, num_classes)
    ref = fake_weights(reference_layout(family, ngf, 3, num_classes, deeper), 4, sigmas)
    net = net_cls(sigmas, 3, ngf)
    states = read_states(reference_file(family, ref))  # through the file layout (module. stripped)
    net.load_state_dict(to_ours(states.model, net, sigmas=sigmas), strict=True)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = torch.tensor([0, 1, 3, 4])
    with torch.no_grad():
        expected = reference_forward(ref, x, y, family, ngf, deeper)
        got = net.eval()(x, y)
    err = float((got - expected).abs().max() / expected.abs().max())
    assert err < 1e-5, err


# -- refusals: one line each --------------------------------------------------------------------------
def test_wrong_truncated_or_mismatched_files_are_refused_with_one_line(tmp_path):
    ckpt, yml, model, _ = write_reference(tmp_path, "ncsnv2", 8, 4, "tiny")
    cases = {}
    data = ckpt.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (tmp_path / "truncated.pth", yml, "ncsnv2", "truncated")
    torch.save({"state_dict": {}}, tmp_path / "lightning.pth")
    cases["a dict"] = (tmp_path / "lightning.pth", yml, "ncsnv2", "not a checkpoint of the reference code")
    torch.save([1, 2, 3], tmp_path / "list3.pth")
    cases["3 items"] = (tmp_path / "list3.pth", yml, "ncsnv2", "a list of 3 items")
    cases["family"] = (ckpt, yml, "ncsn", "layout of ncsnv2")
    broken = dict(model)
    broken.pop("refine2.crp.convs.1.weight")
    broken["extra.weight"] = torch.zeros(1)
    torch.save(reference_file("ncsnv2", broken), tmp_path / "broken.pth")
    cases["keys"] = (tmp_path / "broken.pth", yml, "ncsnv2", "missing: refine2.crp.convs.1.weight")
    other = tmp_path / "other.yml"
    other.write_text(yaml.safe_dump(ncsnv2_yml(ngf=16, num_classes=4)))
    cases["width"] = (ckpt, other, "ncsnv2", "shape mismatch")
    levels = tmp_path / "levels.yml"
    levels.write_text(
        yaml.safe_dump(ncsnv2_yml(ngf=8, num_classes=4) | {"model": {**ncsnv2_yml(8, 4)["model"], "sigma_begin": 10}})
    )
    cases["sigmas"] = (ckpt, levels, "ncsnv2", "noise levels")
    lsun = tmp_path / "lsun.yml"
    lsun.write_text(yaml.safe_dump(ncsnv2_yml(8, 4) | {"data": {**ncsnv2_yml(8, 4)["data"], "dataset": "LSUN"}}))
    cases["dataset"] = (ckpt, lsun, "ncsnv2", "LSUN")
    for name, (path, cfg, reference, message) in cases.items():
        with pytest.raises(ConfigError) as err:
            reference_to_checkpoint(path, cfg, reference=reference)
        assert message in str(err.value), (name, str(err.value))
        assert "\n" not in str(err.value), name


def test_reads_the_config_yml_that_ncsnv2_saves_next_to_its_checkpoints(tmp_path):
    # main.py of both codes yaml.dumps the argparse.Namespace of the config: read as plain mappings
    text = yaml.dump(namespace(ncsnv2_yml(8, 4)), default_flow_style=False)
    assert "!!python/object:argparse.Namespace" in text
    (tmp_path / "config.yml").write_text(text)
    assert read_reference_config(tmp_path / "config.yml") == ncsnv2_yml(8, 4)
    (tmp_path / "evil.yml").write_text("data: !!python/object/apply:os.system ['true']\nmodel: {}\n")
    with pytest.raises(ConfigError):
        read_reference_config(tmp_path / "evil.yml")


# -- sample.py and python -m ncsn.workflow.convert on release files, end to end -----------------------------------
@pytest.fixture(scope="module")
def tiny_releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    write_cifar10(root / "data", per_batch=4, n_test=6)
    # NCSN as released: run/logs/<doc>/checkpoint.pth next to the config.yml its main.py dumped
    log = root / "run" / "logs" / "cifar10"
    log.mkdir(parents=True)
    ncsn_ckpt, ncsn_yml_path = write_reference(log, "ncsn", 8, 3, "checkpoint")[:2]
    text = yaml.dump(namespace(yaml.safe_load(ncsn_yml_path.read_text())), default_flow_style=False)
    (log / "config.yml").write_text(text)
    ncsn_yml_path.unlink()
    return {
        "root": root,
        "ncsn": (ncsn_ckpt, log / "config.yml"),
        "ncsnv2": write_reference(root, "ncsnv2", 8, 3, "v2")[:2],
    }


def _sample_in_process(overrides, out):
    from hydra import compose, initialize_config_dir

    from ncsn.workflow.sample import sample

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "sample", overrides=[*overrides, f"out_dir={out}", f"paths.run_dir={out}", "device=cpu", "torch_threads=1"]
        )
        return sample(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, extra, files",
    [
        ("samples", ["sampler.n_samples=4"], ["samples.npz", "samples.png"]),
        ("inpaint", ["inpaint.n_images=2", "inpaint.n_per_image=2"], ["inpainting.png", "inpainting.npz"]),
        ("interpolate", ["interpolate.n_rows=1", "interpolate.n_interp=3"], ["interpolation.png"]),
        ("progression", ["progression.n_show=2"], ["progression.png", "progression.gif"]),
        (
            "fid",
            [
                "eval.n_samples=6",
                "sampler.batch_size=6",
                "reference_overrides=['fid=classifier','fid.classifier_epochs=1']",
            ],
            [],
        ),
    ],
)
@pytest.mark.parametrize("family", ["ncsn", "ncsnv2"])
def test_sample_modes_run_on_a_release_file(family, mode, extra, files, tiny_releases, tmp_path):
    ckpt, yml = tiny_releases[family]
    root = tiny_releases["root"]
    results = _sample_in_process(
        [
            f"ckpt_path={ckpt}",
            f"reference={family}",
            *([f"reference_config={yml}"] if family == "ncsnv2" else []),  # NCSN: the config.yml beside it
            f"mode={mode}",
            "sampler.n_steps_each=1",
            f"paths.data_dir={root / 'data'}",
            f"paths.cache_dir={root / 'cache'}",
            *extra,
        ],
        tmp_path,
    )
    for name in files:
        assert (tmp_path / name).is_file(), name
    if mode == "samples":
        assert np.load(tmp_path / "samples.npz")["samples"].shape == (4, 3, 32, 32)
        assert ("samples_before_denoise" in np.load(tmp_path / "samples.npz")) == (family == "ncsnv2")
    if mode == "fid":
        assert results["fid"] > 0 and results["n_samples"] == 6
    saved = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert saved["train_config"]["sigmas"]["num_scales"] == 3


@pytest.mark.slow
def test_convert_command_then_sample_and_bad_files_exit_2(tiny_releases, tmp_path, capsys):
    from ncsn.workflow.convert import main as convert

    ckpt, yml = tiny_releases["ncsnv2"]
    root = tiny_releases["root"]
    out = tmp_path / "converted.ckpt"
    assert convert([str(ckpt), str(yml), str(out), f"paths.data_dir={root / 'data'}"]) == 0
    assert "EMA weights" in capsys.readouterr().out and out.is_file()
    # a later command needs only ckpt_path=
    results = _sample_in_process([f"ckpt_path={out}", "sampler.n_samples=2", "sampler.n_steps_each=1"], tmp_path / "s")
    assert results["n_samples"] == 2 and (tmp_path / "s" / "samples.npz").is_file()
    # and back to the reference layout
    back = tmp_path / "back.pth"
    assert convert(["--to-reference", str(out), str(back)]) == 0
    states = torch.load(back, weights_only=True)
    assert len(states) == 5 and states[3] == 300000 and (tmp_path / "back.yml").is_file()
    assert yaml.safe_load((tmp_path / "back.yml").read_text())["sampling"]["n_steps_each"] == 1
    # bad files: one line, exit 2 (an NCSN file with an NCSNv2 config; a truncated file)
    capsys.readouterr()
    assert convert([str(tiny_releases["ncsn"][0]), str(yml), str(tmp_path / "o.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "NCSNv2 config" in err
    data = ckpt.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 3])
    res = run_cli(
        "sample.py",
        f"ckpt_path={truncated}",
        "reference=ncsnv2",
        f"reference_config={yml}",
        f"hydra.run.dir={tmp_path / 'x'}",
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated" in errors[0] and str(truncated) in errors[0]
