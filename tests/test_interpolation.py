import torch

from latentwalk.interpolation import lerp, seed_noise, slerp, slerp_noise


def test_seed_noise_is_deterministic_and_seed_dependent():
    a = seed_noise(7, (4, 8, 8))
    assert torch.equal(a, seed_noise(7, (4, 8, 8)))
    assert not torch.equal(a, seed_noise(8, (4, 8, 8)))
    assert abs(a.std().item() - 1.0) < 0.15


def test_slerp_endpoints_are_exact():
    a, b = seed_noise(1, (3, 64)), seed_noise(2, (3, 64))
    assert torch.equal(slerp(a, b, torch.zeros(3)), a)
    assert torch.equal(slerp(a, b, torch.ones(3)), b)


def test_slerp_keeps_norm_of_unit_vectors_and_lerp_does_not():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = slerp(a, b, torch.tensor([0.5]))
    torch.testing.assert_close(mid, torch.tensor([[0.5**0.5, 0.5**0.5]]))
    assert lerp(a, b, torch.tensor([0.5])).norm() < 0.75


def test_slerp_is_a_constant_speed_arc():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    angles = [torch.atan2(*slerp(a, b, torch.tensor([t]))[0].flip(0)).item() for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    torch.testing.assert_close(torch.tensor(angles), torch.tensor([0, 0.25, 0.5, 0.75, 1.0]) * torch.pi / 2)


def test_slerp_of_nearly_parallel_vectors_is_finite():
    a = torch.ones(1, 16)
    out = slerp(a, a * (1 + 1e-7), torch.tensor([0.3]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, a)


def test_slerp_noise_batches_and_preserves_norm():
    a, b = seed_noise(1, (4, 16, 16)), seed_noise(2, (4, 16, 16))
    out = slerp_noise(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert out.shape == (3, 4, 16, 16)
    assert torch.equal(out[0], a) and torch.equal(out[2], b)
    assert abs(out[1].norm() / a.norm() - 1) < 0.05  # a lerp midpoint would be ~0.71


def test_interpolators_do_not_modify_inputs():
    a, b = seed_noise(1, (2, 8)), seed_noise(2, (2, 8))
    a0, b0 = a.clone(), b.clone()
    slerp(a, b, torch.tensor([0.3, 0.6]))
    lerp(a, b, torch.tensor([[0.3], [0.6]]))
    assert torch.equal(a, a0) and torch.equal(b, b0)
