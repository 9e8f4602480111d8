"""Wasserstein distance guided representation learning: WDGRL (Shen et al., AAAI 2018)."""

from __future__ import annotations

import torch
from torch import nn

from dalib.discrepancy.adversarial import GradientReversal
from dalib.discrepancy.base import Discrepancy, check_features, normalised_weights
from dalib.discrepancy.registry import DISCREPANCIES
from dalib.distributed import world_size
from dalib.errors import DalibError, check_weight


class WassersteinCritic(nn.Sequential):
    """An MLP from features to one raw score: Linear+ReLU hidden layers, then Linear(·, 1).

    No BatchNorm (the gradient penalty is a per-sample constraint, which batch statistics would
    couple across samples) and no sigmoid (the score is unbounded, a Kantorovich potential).
    """

    def __init__(self, in_features: int, hidden_dim: int = 64, num_hidden: int = 1) -> None:
        if in_features <= 0 or hidden_dim <= 0 or num_hidden < 0:
            raise DalibError(
                "a Wasserstein critic needs in_features > 0, hidden_dim > 0, num_hidden >= 0, "
                f"got {in_features}, {hidden_dim}, {num_hidden}"
            )
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)


@DISCREPANCIES.register("wdgrl")
class WassersteinDistanceGuided(Discrepancy):
    """WDGRL's domain critic loss (Shen, Qu, Zhang and Yu, "Wasserstein Distance Guided
    Representation Learning for Domain Adaptation", AAAI 2018).

    A critic ``h`` estimates the Wasserstein-1 distance by its Kantorovich dual,
    ``W = Σ a_i h(f_s,i) - Σ b_j h(f_t,j)`` (weighted means; uniform without weights), and is kept
    about 1-Lipschitz by the gradient penalty ``GP = mean (‖∇h(x)‖₂ - 1)²``. As in the authors'
    code (RockySJ/WDGRL) the penalty is taken at the source and target features and at one random
    point on the segment between each source-target pair (pairs cycle through the smaller batch),
    all detached, with an unweighted mean: it constrains the critic, not the features. The
    critic maximises ``W - gp_weight·GP``; the feature extractor minimises ``W``.

    **Returned value and signs.** ``D = -(W_grl - gp_weight·GP)`` where ``W_grl`` is ``W``
    computed on ``grl(f)``. Minimising γ·D

    - for the critic's parameters (no GRL on that path): descends ``-W + gp_weight·GP``, i.e.
      maximises ``W - gp_weight·GP``, the critic's objective;
    - for the features: ``∂D/∂(grl(f)) = -∂W/∂f`` and the GRL multiplies it by ``-grl_coeff``, so
      ``f`` receives ``+grl_coeff·∂W/∂f`` and a descent step on it *decreases* ``W``;
    - GP sends no gradient to the features (it is computed on detached features).

    D is therefore the negated critic objective: it becomes negative as the critic learns to
    separate the domains, and its magnitude tracks the estimated distance.

    **Critic steps.** The paper trains the critic ``n`` steps (``critic_steps``) per
    feature-extractor step. In training mode, with gradients enabled, the forward pass first runs
    ``critic_steps - 1`` Adam steps (learning rate ``critic_lr``) on the critic alone, maximising
    ``W - gp_weight·GP`` on the detached batch; the returned value then gives the last critic step
    and the features' step through the module's own optimiser. Evaluation mode or
    ``critic_steps=1`` runs no inner steps. The inner steps leave the critic's ``.grad`` as they
    found it (gradient accumulation is unaffected).

    **Defaults.** From the authors' code: ``gp_weight=10``. Unlike the paper and its code (speed):
    ``critic_steps=1`` and a critic with one hidden layer of 64 ReLU units (``hidden_dim=64``).
    The authors' code (RockySJ/WDGRL) has 100 units and trains the critic 5 steps with Adam at
    1e-4 (Amazon reviews, MNIST→USPS) or 10 steps at 1e-3 (Office-Caltech features, toy data)
    per feature step. Each inner step is a forward, a double backward (the penalty) and an Adam
    step: at batch 32-64 on LeNet's 500-d features, the authors' critic with 5 steps costs
    35-52% of a LeNet training step, the defaults under 10%
    (``benchmarks/results/discrepancy_speed_lenet_only.md``; 1 step with 100 units was 9.7% at
    batch 32 in commit 973f726, too close to the target). With one step the critic learns
    at the module's learning rate, once per feature step, as DANN's discriminator does. The
    paper configs pin ``critic_steps: 5, hidden_dim: 100`` (``critic_lr=1e-3``, between the
    authors' two settings, is used only when ``critic_steps > 1``).

    The inner Adam lives in a plain attribute, not a submodule: it is not in ``state_dict()`` (a
    checkpoint holds the critic's weights but not these Adam moments, which restart from zero in a
    resumed run), and it is rebuilt when the critic's parameters change dtype or device. The inner
    steps are local to the process: under data-parallel training each replica's critic would
    drift apart, so there they raise an error: use a single device or ``critic_steps=1``.
    Interpolation coefficients are drawn from torch's global generator, so a seeded run is
    reproducible.
    """

    adversarial = True

    def __init__(
        self,
        in_features: int,
        hidden_dim: int = 64,
        num_hidden: int = 1,
        gp_weight: float = 10.0,
        critic_steps: int = 1,
        critic_lr: float = 1e-3,
        grl_coeff: float = 1.0,
    ) -> None:
        super().__init__()
        if int(critic_steps) != critic_steps or critic_steps < 1:
            raise DalibError(f"critic_steps must be an integer >= 1, got {critic_steps}")
        if not critic_lr > 0:
            raise DalibError(f"critic_lr must be > 0, got {critic_lr}")
        self.gp_weight = check_weight("gp_weight", gp_weight)
        self.critic_steps = int(critic_steps)
        self.critic_lr = float(critic_lr)
        self.grl = GradientReversal(grl_coeff)
        self.critic = WassersteinCritic(in_features, hidden_dim, num_hidden)
        self._inner_optimizer: torch.optim.Adam | None = None
        self._inner_key: tuple | None = None

    def wasserstein(
        self, f_s: torch.Tensor, f_t: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        """The critic's estimate ``W = a·h(f_s) - b·h(f_t)`` (a, b sum to one)."""
        h = self.critic(torch.cat([f_s, f_t])).squeeze(1)
        return a @ h[: f_s.shape[0]] - b @ h[f_s.shape[0] :]

    @staticmethod
    def penalty_points(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """Detached source, target, and one random point on each source-target segment."""
        f_s, f_t = f_s.detach(), f_t.detach()
        n = max(f_s.shape[0], f_t.shape[0])
        idx = torch.arange(n, device=f_s.device)
        src, tgt = f_s[idx % f_s.shape[0]], f_t[idx % f_t.shape[0]]
        alpha = torch.rand(n, 1, dtype=f_s.dtype, device=f_s.device)
        return torch.cat([f_s, f_t, tgt + alpha * (src - tgt)])

    def gradient_penalty(self, points: torch.Tensor) -> torch.Tensor:
        """``mean_x (‖∇h(x)‖₂ - 1)²`` over the rows of ``points`` (no gradient to ``points``).

        Differentiable in the critic's parameters when gradients are enabled, so it can be
        minimised; it needs autograd, so it cannot be evaluated under ``torch.inference_mode``.
        """
        if torch.is_inference_mode_enabled():
            raise DalibError(
                "wdgrl's gradient penalty needs autograd: evaluate it outside "
                "torch.inference_mode (torch.no_grad is fine)"
            )
        differentiable = torch.is_grad_enabled()
        with torch.enable_grad():
            x = points.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.critic(x).sum(), x, create_graph=differentiable)
        return (torch.linalg.vector_norm(grad, dim=1) - 1.0).pow(2).mean()

    def critic_objective(
        self, f_s: torch.Tensor, f_t: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        """``W - gp_weight·GP`` on detached features: what the critic maximises."""
        w = self.wasserstein(f_s.detach(), f_t.detach(), a, b)
        return w - self.gp_weight * self.gradient_penalty(self.penalty_points(f_s, f_t))

    def inner_optimizer(self) -> torch.optim.Adam:
        """The critic's own Adam, built lazily on the parameters' current dtype and device."""
        params = list(self.critic.parameters())
        key = (tuple(id(p) for p in params), params[0].dtype, params[0].device)
        if self._inner_optimizer is None or self._inner_key != key:
            self._inner_optimizer = torch.optim.Adam(params, lr=self.critic_lr)
            self._inner_key = key
        return self._inner_optimizer

    def train_critic(
        self, f_s: torch.Tensor, f_t: torch.Tensor, a: torch.Tensor, b: torch.Tensor, steps: int
    ) -> None:
        """``steps`` Adam steps on the critic alone, maximising ``W - gp_weight·GP``."""
        optimizer = self.inner_optimizer()
        params = list(self.critic.parameters())
        saved = [p.grad for p in params]
        f_s, f_t, a, b = f_s.detach(), f_t.detach(), a.detach(), b.detach()
        try:
            with torch.enable_grad():
                for _ in range(steps):
                    optimizer.zero_grad(set_to_none=True)
                    (-self.critic_objective(f_s, f_t, a, b)).backward()
                    optimizer.step()
        finally:
            for p, grad in zip(params, saved, strict=True):
                p.grad = grad

    def forward(self, f_s, f_t, *, logits_s=None, logits_t=None, y_s=None, w_s=None, w_t=None):
        check_features(f_s, f_t)
        a = normalised_weights(w_s, f_s.shape[0], f_s)
        b = normalised_weights(w_t, f_t.shape[0], f_t)
        if self.training and self.critic_steps > 1 and torch.is_grad_enabled():
            if world_size() > 1:
                raise DalibError(
                    f"wdgrl's {self.critic_steps - 1} inner critic steps per step would train "
                    "each process's critic apart under DDP; set critic_steps: 1 or use one device"
                )
            self.train_critic(f_s, f_t, a, b, self.critic_steps - 1)
        w = self.wasserstein(self.grl(f_s), self.grl(f_t), a, b)
        gp = self.gradient_penalty(self.penalty_points(f_s, f_t))
        return self.gp_weight * gp - w
