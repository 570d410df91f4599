import pytest
import torch

from ncsn.core.sigmas import make_sigmas
from ncsn.core.toy import GaussianMixture, paper_mixture
from ncsn.sampling import Annealed, Langevin, Sampler, annealed_langevin, langevin


def test_mixture_score_equals_autograd_of_log_density():
    gm = GaussianMixture([[-1.0, 2.0], [3.0, 0.5], [0.0, -2.0]], [0.5, 1.0, 2.0], [0.2, 0.3, 0.5])
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    for sigma in (0.0, 0.3, 4.0):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(gm.log_prob(xg, sigma).sum(), xg)
        assert torch.allclose(gm.score(x, sigma), grad, atol=1e-10)


def test_paper_toy_annealed_recovers_weights_plain_langevin_does_not():
    """NCSN Fig. 3 with exact scores: from U([-8, 8]^2), annealed Langevin over 10 geometric
    sigmas from 20 to 1 recovers the weights 0.2/0.8; plain Langevin at sigma=1 does not."""
    gm = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 10)
    score = gm.score_fn(sigmas)
    n = 2560
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 2, generator=g, dtype=torch.float64) * 16 - 8
    annealed = annealed_langevin(score, x0, sigmas, step_lr=0.1, n_steps_each=100, generator=g, progress=False)
    w = gm.mode_weights(annealed.samples)
    assert abs(w[0] - 0.2) < 0.03 and abs(w[1] - 0.8) < 0.03
    plain = langevin(score, x0, level=9, step_lr=0.1, n_steps=1000, generator=g, progress=False)
    w_plain = gm.mode_weights(plain.samples)
    assert abs(w_plain[0] - 0.2) > 0.1


def test_annealed_sampler_step_convention_and_denoise():
    """One level, one step, with a constant score c: x1 = x0 + a c + sqrt(2a) z, a = step_lr
    (sigma_i/sigma_L)^2; the denoising step adds sigma_L^2 * c."""
    sigmas = torch.tensor([4.0, 2.0], dtype=torch.float64)
    c = torch.tensor([0.5, -1.0], dtype=torch.float64)
    seen = []

    def score(x, i):
        seen.append(i.clone())
        return c.expand_as(x)

    x0 = torch.zeros(3, 2, dtype=torch.float64)
    res = annealed_langevin(
        score,
        x0,
        sigmas,
        0.01,
        1,
        denoise=True,
        generator=torch.Generator().manual_seed(5),
        keep_frames=True,
        progress=False,
    )
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    a1, a2 = 0.01 * 4.0, 0.01 * 1.0
    x1 = x0 + a1 * c + (2 * a1) ** 0.5 * z1
    x2 = x1 + a2 * c + (2 * a2) ** 0.5 * z2
    assert torch.allclose(res.before_denoise, x2)
    assert torch.allclose(res.samples, x2 + 4.0 * c)
    assert len(res.frames) == 2 and torch.allclose(res.frames[0], x1)
    assert [int(i[0]) for i in seen] == [0, 1, 1]  # level 0 first (largest sigma), denoise at L-1
    assert torch.equal(x0, torch.zeros(3, 2, dtype=torch.float64))  # input not modified


def test_sampler_is_reproducible_per_seed_and_batches_agree():
    gm = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 3)
    s = Sampler(Annealed(0.1, 5), n_samples=10, batch_size=4, init_low=-8, init_high=8)
    a = s.draw(gm.score_fn(sigmas), sigmas, (2,), 1, progress=False)
    b = s.draw(gm.score_fn(sigmas), sigmas, (2,), 1, progress=False)
    c = s.draw(gm.score_fn(sigmas), sigmas, (2,), 2, progress=False)
    assert a.samples.shape == (10, 2) and torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    plain = Sampler(Langevin(0.1, n_steps=15, frame_every=5), n_samples=4)
    calls = []
    score = lambda x, i: calls.append(int(i[0])) or torch.zeros_like(x)  # noqa: E731
    plain.draw(score, sigmas, (2,), torch.Generator(), progress=False)
    assert calls == [2] * 15  # sigma_L only, n_steps steps


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"n_samples": 0}, "sampler.n_samples"),
        ({"batch_size": 1.5}, "sampler.batch_size"),
        ({"init": "zeros"}, "sampler.init"),
        ({"init_mean": "median"}, "sampler.init_mean"),
        ({"init_low": 1.0, "init_high": 0.0}, "sampler.init_high"),
        ({"denoise": "yes"}, "sampler.denoise"),
        ({"compile": "yes"}, "sampler.compile"),
        ({"autocast": "int8"}, "sampler.autocast"),
    ],
)
def test_sampler_rejects_bad_settings(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Sampler(Annealed(), **kwargs)


def test_compiled_sampler_compiles_once_and_draws_what_the_eager_one_draws():
    from ncsn.nets.mlp import ConditionalMLP

    sigmas = make_sigmas("geometric", 5.0, 0.1, 4)
    torch.manual_seed(0)
    net = ConditionalMLP(sigmas=sigmas, hidden=32).eval()
    compiled = Sampler(Annealed(0.01, 3), n_samples=16, compile=True)
    assert isinstance(compiled.wrap(net), torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.wrap(net) is compiled.wrap(net)  # one compiled wrapper per network, reused
    eager = Sampler(Annealed(0.01, 3), n_samples=16)
    assert eager.wrap(net) is net
    a = compiled.draw(net, sigmas, (2,), torch.Generator().manual_seed(0), progress=False)
    b = eager.draw(net, sigmas, (2,), torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-5, atol=1e-5)


def test_learned_mlp_recovers_mixture_weights_with_annealed_langevin():
    """The MLP trained briefly with the DSM loss (the toy_gmm recipe: batch 512, Adam 1e-3,
    3,000 steps, EMA 0.999), sampled with annealed Langevin: weights within 0.05 of 0.2/0.8."""
    from ncsn.core.losses import dsm_loss
    from ncsn.nets.mlp import ConditionalMLP

    torch.manual_seed(0)
    gm = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 10)
    data = gm.sample(10_000, torch.Generator().manual_seed(0)).float()
    net = ConditionalMLP(sigmas)
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(3000):
        loss = dsm_loss(net, data[torch.randint(0, len(data), (512,))], net.sigmas).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(net)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(1280, 2, generator=g) * 16 - 8
    res = annealed_langevin(ema.module, x0, ema.module.sigmas, 0.1, 100, generator=g, progress=False)
    w = gm.mode_weights(res.samples)
    assert abs(w[0] - 0.2) < 0.05 and abs(w[1] - 0.8) < 0.05, w
