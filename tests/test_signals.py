"""ξ against autograd of the objective each variant descends (MATH §3), in float64."""
import itertools

import pytest
import torch

from ibhebb.functional.kernels import hsic, hsic_bottleneck, kernel_matrix
from ibhebb.functional.signals import diagonal_surrogate, global_signal

SIGMAS = (0.5, 0.3, 0.8)
GAMMA = 2.0


def random_window(lead, n, dx=7, dy=4, dz=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n, dx, generator=g, dtype=torch.float64)
    labels = torch.randint(0, dy, (*lead, n), generator=g)
    y = torch.nn.functional.one_hot(labels, dy).double()
    z = torch.randn(*lead, n, dz, generator=g, dtype=torch.float64) * 0.7
    return x, y, z


def grad_wrt_current(objective, z):
    z = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(z).sum(), z)
    return g[..., -1, :]


CASES = list(itertools.product([(), (3,), (2, 3)], [2, 5, 8]))


@pytest.mark.parametrize("lead,n", CASES)
def test_exact_is_gradient_of_windowed_loss(lead, n):
    x, y, z = random_window(lead, n, seed=n)
    want = grad_wrt_current(lambda zz: hsic_bottleneck(x, y, zz, gamma=GAMMA, sigmas=SIGMAS)[0], z)
    got = global_signal(x, y, z, gamma=GAMMA, sigmas=SIGMAS, variant="exact")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lead,n", CASES)
def test_paper_is_twice_gradient_of_diagonal_surrogate(lead, n):
    x, y, z = random_window(lead, n, seed=10 + n)
    want = 2 * grad_wrt_current(lambda zz: diagonal_surrogate(x, y, zz, gamma=GAMMA, sigmas=SIGMAS), z)
    got = global_signal(x, y, z, gamma=GAMMA, sigmas=SIGMAS, variant="paper")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lead,n", CASES)
def test_first_term_is_current_sample_part_of_surrogate(lead, n):
    """The first term is 2 ∂/∂z_0 of s_0 k̄_z(z_0, z_0)/(N-1)² alone."""
    x, y, z = random_window(lead, n, seed=20 + n)
    from ibhebb.functional.kernels import centred_diagonal

    s0 = (
        centred_diagonal(kernel_matrix(x, SIGMAS[0])) - GAMMA * centred_diagonal(kernel_matrix(y, SIGMAS[1]))
    )[..., -1]

    def objective(zz):
        return s0 * centred_diagonal(kernel_matrix(zz, SIGMAS[2]))[..., -1] / (n - 1) ** 2

    want = 2 * grad_wrt_current(objective, z)
    got = global_signal(x, y, z, gamma=GAMMA, sigmas=SIGMAS, variant="first-term")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_inputs_shared_across_replicas_broadcast():
    x, y, z = random_window((4,), 6)
    shared = global_signal(x[0], y[0], z, gamma=GAMMA, sigmas=SIGMAS)
    each = global_signal(x[0].expand(4, -1, -1), y[0].expand(4, -1, -1), z, gamma=GAMMA, sigmas=SIGMAS)
    torch.testing.assert_close(shared, each)


def test_variants_differ_and_bad_input_refused():
    x, y, z = random_window((), 6)
    a, b, c = (global_signal(x, y, z, gamma=GAMMA, sigmas=SIGMAS, variant=v) for v in ("paper", "first-term", "exact"))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="variant"):
        global_signal(x, y, z, gamma=GAMMA, sigmas=SIGMAS, variant="nope")
    with pytest.raises(ValueError, match="N >= 2"):
        global_signal(x[-1:], y[-1:], z[-1:], gamma=GAMMA, sigmas=SIGMAS)


def test_hsic_against_double_sum():
    """tr(K_A H K_B H)/(N-1)² equals the direct triple-sum form of Gretton et al."""
    g = torch.Generator().manual_seed(3)
    n = 7
    a = torch.randn(n, 3, generator=g, dtype=torch.float64)
    b = torch.randn(n, 2, generator=g, dtype=torch.float64)
    KA, KB = kernel_matrix(a, 0.7), kernel_matrix(b, 1.3)
    direct = 0.0
    for i in range(n):
        for j in range(n):
            direct += KA[i, j] * KB[i, j]
            direct += KA[i, j] * sum(KB[q, r] for q in range(n) for r in range(n)) / n**2
            direct -= 2 * KA[i, j] * sum(KB[i, q] for q in range(n)) / n
    direct = direct / (n - 1) ** 2
    torch.testing.assert_close(hsic(KA, KB), torch.as_tensor(direct, dtype=torch.float64), rtol=1e-12, atol=1e-14)


def test_kernel_matrix_matches_definition():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(5, 6, generator=g, dtype=torch.float64)
    K = kernel_matrix(v, 0.9)
    for p in range(5):
        for q in range(5):
            want = torch.exp(-((v[p] - v[q]) ** 2).sum() / (2 * 0.9**2 * 6))
            torch.testing.assert_close(K[p, q], want, rtol=1e-12, atol=1e-14)
