"""The network is the published one: names, shapes, parameter counts, and the same function as an
independent float64 implementation of docs/model.md ("Data flow") written here (no code shared with mma.model/ops)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mma.errors import ConfigError
from mma.model import MMAConfig, build_model, infer_config

PUBLISHED_COUNTS = {
    ("mma-t", 2): 795_735,
    ("mma-t", 3): 899_655,
    ("mma-t", 4): 878_871,
    ("mma-b", 2): 19_824_627,
    ("mma-b", 3): 21_484_467,
    ("mma-b", 4): 21_152_499,
}


def read_spec(spec_dir: Path, variant: str, scale: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (spec_dir / f"state_dict_{variant}_x{scale}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            shapes[name] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return shapes


@pytest.mark.parametrize("variant,scale", sorted(PUBLISHED_COUNTS))
def test_names_shapes_and_counts_match_the_authors(spec_dir, variant, scale):
    model = build_model(variant, scale)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(read_spec(spec_dir, variant, scale))
    assert ours == read_spec(spec_dir, variant, scale)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_COUNTS[variant, scale]


@pytest.mark.parametrize("variant,scale", [("mma-t", 2), ("mma-t", 3), ("mma-t", 4), ("mma-b", 4)])
def test_infer_config_reads_variant_and_scale_off_shapes(variant, scale):
    sd = build_model(variant, scale).state_dict()
    config = infer_config(sd)
    assert (config.variant, config.scale) == (variant, scale)
    assert config == MMAConfig.named(variant, scale)


def test_config_round_trips_and_rejects_bad_values():
    config = MMAConfig.named("mma-t", 3, num_block=2)
    assert MMAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="scale 5"):
        MMAConfig.named("mma-t", 5)
    with pytest.raises(ConfigError, match="unknown variant"):
        MMAConfig.named("mma-x", 2)
    with pytest.raises(ConfigError, match="num_heads"):
        MMAConfig.named("mma-t", 2, num_heads=4)


def test_mamba_initialisation_follows_the_published_conventions():
    mamba = build_model("mma-t", 2, num_block=1).body[0].attn.mamba.mamba
    assert torch.allclose(mamba.A_log.exp(), torch.arange(1, 17.0).expand(96, 16))
    assert torch.equal(mamba.D, torch.ones(96))
    dt = F.softplus(mamba.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert mamba.dt_proj.weight.abs().max() <= 3**-0.5


# ---------------------------------------------------------------- independent float64 reference


def ref_scan(u, delta, a, b, c, d, z):
    """Sequential selective scan of one direction; u, delta, z (Di, L); b, c (N, L); a (Di, N)."""
    h = torch.zeros(a.shape, dtype=torch.float64)
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, None] * a) * h + delta[:, t, None] * b[None, :, t] * u[:, t, None]
        ys.append(h @ c[:, t] + d * u[:, t])
    y = torch.stack(ys, dim=1)
    return y * z * torch.sigmoid(z)


def ref_mamba_direction(sd, p, x, z, suffix):
    """x, z: (Di, L) of one image; suffix '' (forward) or '_b' (on sequences already reversed)."""
    w = sd[f"{p}conv1d{suffix}.weight"][:, 0]  # (Di, 4)
    k = w.shape[1]
    xp = torch.cat([torch.zeros(x.shape[0], k - 1, dtype=x.dtype), x], dim=1)
    conv = (
        sum(w[:, j, None] * xp[:, j : j + x.shape[1]] for j in range(k))
        + sd[f"{p}conv1d{suffix}.bias"][:, None]
    )
    u = conv * torch.sigmoid(conv)
    dbl = sd[f"{p}x_proj{suffix}.weight"] @ u  # (R + 2N, L)
    n = sd[f"{p}A_log"].shape[1]
    r = dbl.shape[0] - 2 * n
    dt, bm, cm = dbl[:r], dbl[r : r + n], dbl[r + n :]
    delta = F.softplus(sd[f"{p}dt_proj{suffix}.weight"] @ dt + sd[f"{p}dt_proj{suffix}.bias"][:, None])
    a_log = sd[f"{p}A_log"] if suffix == "" else sd[f"{p}A_b_log"]
    d = sd[f"{p}D"] if suffix == "" else sd[f"{p}D_b"]
    return ref_scan(u, delta, -torch.exp(a_log), bm, cm, d, z)


def ref_vim(sd, p, feat):
    """feat (C, H, W) -> (C, H, W) through the bidirectional Mamba layer."""
    c, h, w = feat.shape
    tokens = feat.reshape(c, h * w)  # raster order
    xz = sd[f"{p}in_proj.weight"] @ tokens
    x, z = xz.chunk(2, dim=0)
    fwd = ref_mamba_direction(sd, p, x, z, "")
    bwd = ref_mamba_direction(sd, p, x.flip(1), z.flip(1), "_b").flip(1)
    return (sd[f"{p}out_proj.weight"] @ (fwd + bwd)).reshape(c, h, w)


def ref_layernorm(sd, p, x):
    mu = x.mean(0, keepdim=True)
    var = ((x - mu) ** 2).mean(0, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * sd[f"{p}.weight"][:, None, None] + sd[f"{p}.bias"][
        :, None, None
    ]


def conv(sd, name, x, groups=1):
    weight = sd[f"{name}.weight"]
    return F.conv2d(x[None], weight, sd[f"{name}.bias"], padding=weight.shape[-1] // 2, groups=groups)[0]


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def ref_block(sd, p, x):
    y = ref_layernorm(sd, f"{p}norm1.body", x)
    cab = f"{p}attn.channel_attention.cab"
    ca = conv(sd, f"{cab}.2", gelu(conv(sd, f"{cab}.0", y)))
    weights = conv(sd, f"{cab}.3.attention.1", ca.mean((1, 2), keepdim=True)).clamp(min=0)
    ca = ca * torch.sigmoid(conv(sd, f"{cab}.3.attention.3", weights))
    x = x + ref_vim(sd, f"{p}attn.mamba.mamba.", y) + ca
    y = ref_layernorm(sd, f"{p}norm2.body", x)
    y = conv(sd, f"{p}ffn.project_in", y)
    y = conv(sd, f"{p}ffn.dwconv", y, groups=y.shape[0])
    x1, x2 = y.chunk(2, dim=0)
    return x + conv(sd, f"{p}ffn.project_out", gelu(x1) * x2)


def ref_network(sd, image, scale):
    mean = torch.tensor([0.4488, 0.4371, 0.4040], dtype=torch.float64)[:, None, None]
    shallow = conv(sd, "conv_first", image - mean)
    x = shallow
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("body.")})):
        x = ref_block(sd, f"body.{i}.", x)
    x = conv(sd, "conv_after_body", x) + shallow
    factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    for i, f in enumerate(factors):
        x = F.pixel_shuffle(conv(sd, f"upsample.{2 * i}", x)[None], f)[0]
    return conv(sd, "conv_last", x) + mean


def random_authors_state_dict(spec_dir, variant, scale, num_block, seed=0):
    """Random float64 weights in the authors' key layout, cut to the first `num_block` blocks."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in read_spec(spec_dir, variant, scale).items():
        if name.startswith("body.") and int(name.split(".")[1]) >= num_block:
            continue
        if name.endswith(("A_log", "A_b_log")):
            value = torch.log(torch.rand(shape, generator=g, dtype=torch.float64) * 15 + 1)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 4
            value = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
        sd[name] = value
    return sd


@pytest.mark.parametrize(
    "variant,scale,num_block", [("mma-t", 2, 2), ("mma-t", 3, 2), ("mma-t", 4, 2), ("mma-b", 2, 1)]
)
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_network_equals_independent_float64_reference(spec_dir, variant, scale, num_block, backend):
    from mma.ops import available_backends

    if available_backends().get(backend) is not None:
        pytest.skip(f"backend {backend} unavailable: {available_backends()[backend]}")
    sd = random_authors_state_dict(spec_dir, variant, scale, num_block)
    model = build_model(variant, scale, num_block=num_block).double().set_scan_backend(backend)
    model.load_state_dict(sd, strict=True)
    image = torch.rand(1, 3, 13, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(image)[0]
    expected = ref_network(sd, image[0], scale)
    assert ours.shape == (3, 13 * scale, 10 * scale)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)
    # float32 stays close to the float64 function too
    with torch.no_grad():
        ours32 = model.float()(image.float())[0].double()
    torch.testing.assert_close(ours32, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_training_forward_and_gradients_equal_the_float64_reference(spec_dir, backend):
    """With autograd (training, LAM), where the backward direction stays a reverse scan and the pair runs its
    two scans in turn, the output and the input's gradient match the independent reference's."""
    from mma.ops import available_backends

    if available_backends().get(backend) is not None:
        pytest.skip(f"backend {backend} unavailable: {available_backends()[backend]}")
    sd = random_authors_state_dict(spec_dir, "mma-t", 2, 1)
    model = build_model("mma-t", 2, num_block=1).double().set_scan_backend(backend)
    model.load_state_dict(sd, strict=True)
    image = torch.rand(1, 3, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weight = torch.randn(3, 18, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours_in, ref_in = image.clone().requires_grad_(), image[0].clone().requires_grad_()
    ours = model(ours_in)[0]
    expected = ref_network(sd, ref_in, 2)
    (ours_grad,) = torch.autograd.grad((ours * weight).sum(), ours_in)
    (ref_grad,) = torch.autograd.grad((expected * weight).sum(), ref_in)
    torch.testing.assert_close(ours.detach(), expected.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_grad[0], ref_grad, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 1)])
def test_any_size_and_batch(size):
    model = build_model("mma-t", 3, num_feat=8, num_block=1)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 3 * size[0], 3 * size[1]) and torch.isfinite(y).all()


@pytest.mark.parametrize("mixer", ["vim", "cnn+ca"])
def test_ablation_mixers_build_run_and_are_inferred(mixer):
    model = build_model("mma-t", 2, num_feat=16, num_block=2, mixer=mixer)
    keys = list(model.state_dict())
    assert any(".attn.channel_attention." in k for k in keys) == mixer.endswith("+ca")
    assert any(".attn.mamba." in k for k in keys) == mixer.startswith("vim")
    assert infer_config(model.state_dict()).mixer == mixer
    with torch.no_grad():
        assert model(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)
    with pytest.raises(ConfigError, match="unknown mixer"):
        MMAConfig.named("mma-t", 2, mixer="transformer")
