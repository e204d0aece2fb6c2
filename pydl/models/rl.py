"""Deep Q-learning (Mnih et al. 2015) for small discrete-action environments such as
gymnasium's CartPole-v1: a Q-network, a replay buffer, a target network and RMSprop.

``DQN(obs_dim, n_actions)`` holds the online network ``q`` and the target network
``target`` (a copy refreshed every ``target_every`` updates); ``train_dqn(env, steps)``
runs epsilon-greedy episodes, learning from replayed minibatches, and returns the
episode returns and TD losses. gymnasium is needed only to make the environment:
any object with gymnasium's ``reset(seed=)`` / ``step(action)`` works.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import nn, optim
from ..autograd import Tensor, no_grad
from ..nn import functional as F

__all__ = ["QNetwork", "ReplayBuffer", "DQN", "train_dqn", "evaluate"]


class QNetwork(nn.Module):
    """``net``: observation (N, obs_dim) -> hidden -> hidden -> one Q-value per action (ReLU)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, obs):
        return self.net(obs)


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next_obs, done) in preallocated
    arrays; ``sample(n)`` draws ``n`` of them uniformly (with replacement) from ``rng``."""

    def __init__(self, capacity: int, obs_dim: int, rng=None):
        if int(capacity) < 1:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.action = np.zeros(self.capacity, np.int64)
        self.reward = np.zeros(self.capacity, np.float32)
        self.done = np.zeros(self.capacity, np.float32)
        self.size = self.pos = 0
        self.rng = rng if rng is not None else np.random.default_rng()

    def __len__(self):
        return self.size

    def push(self, obs, action, reward, next_obs, done):
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.done[i] = next_obs, float(done)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int):
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = self.rng.integers(0, self.size, int(n))
        return self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.done[idx]


class DQN(nn.Module):
    """The agent: online Q-network ``q``, target network ``target``, RMSprop on ``q``.

    ``update(batch)`` takes one gradient step on the mean squared TD error
    ``(r + gamma * (1 - done) * max_a target(s')[a] - q(s)[a])^2`` (``double=True``
    picks the next action with ``q`` and values it with ``target``: Double DQN), the
    gradient norm clipped at 10, and refreshes the target network every
    ``target_every`` updates.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64, lr: float = 1e-3, gamma: float = 0.99,
                 target_every: int = 100, double: bool = False):
        super().__init__()
        self.n_actions, self.gamma, self.target_every = int(n_actions), float(gamma), int(target_every)
        self.double = bool(double)
        self.q = QNetwork(obs_dim, n_actions, hidden)
        self.target = copy.deepcopy(self.q)
        self.target.requires_grad_(False)
        self.optimizer = optim.RMSprop(self.q.parameters(), lr=lr, alpha=0.95, eps=1e-6)
        self.updates = 0

    def act(self, obs, epsilon: float, rng) -> int:
        """Epsilon-greedy action for one observation."""
        if rng.random() < epsilon:
            return int(rng.integers(self.n_actions))
        with no_grad():
            return int(self.q(Tensor(np.asarray(obs, np.float32)[None])).data.argmax())

    def update(self, batch) -> float:
        obs, action, reward, next_obs, done = batch
        with no_grad():
            nq = self.target(Tensor(next_obs)).data
            if self.double:
                best = self.q(Tensor(next_obs)).data.argmax(axis=1)
                nxt = nq[np.arange(len(best)), best]
            else:
                nxt = nq.max(axis=1)
            target = (reward + self.gamma * (1.0 - done) * nxt).astype(np.float32)
        q = self.q(Tensor(obs))[np.arange(len(action)), action]
        loss = F.mse_loss(q, target)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_every == 0:
            self.target.load_state_dict(self.q.state_dict())
        return float(loss.item())


def train_dqn(env, steps: int, agent: DQN | None = None, *, batch_size: int = 64, buffer_size: int = 10000,
              warmup: int = 500, eps_start: float = 1.0, eps_end: float = 0.05, eps_decay: int = 2000,
              train_every: int = 1, seed: int = 0):
    """Run ``steps`` environment steps of epsilon-greedy DQN on ``env``.

    Epsilon falls linearly from ``eps_start`` to ``eps_end`` over ``eps_decay`` steps;
    updates start once ``warmup`` transitions are stored. Returns
    ``(agent, episode returns, TD losses)``.
    """
    rng = np.random.default_rng(seed)
    obs_dim = int(np.prod(env.observation_space.shape))
    agent = agent or DQN(obs_dim, int(env.action_space.n))
    buf = ReplayBuffer(buffer_size, obs_dim, rng)
    returns, losses = [], []
    obs, _ = env.reset(seed=seed)
    ret = 0.0
    for t in range(int(steps)):
        eps = max(eps_end, eps_start - (eps_start - eps_end) * t / max(1, eps_decay))
        a = agent.act(obs, eps, rng)
        nobs, r, terminated, truncated, _ = env.step(a)
        # a time limit is not a terminal state: bootstrap through truncation
        buf.push(obs, a, r, nobs, terminated)
        ret += r
        obs = nobs
        if terminated or truncated:
            returns.append(ret)
            ret = 0.0
            obs, _ = env.reset()
        if len(buf) >= warmup and t % train_every == 0:
            losses.append(agent.update(buf.sample(batch_size)))
    return agent, returns, losses


def evaluate(env, agent: DQN, episodes: int = 5, seed: int = 1000) -> float:
    """Mean return of the greedy policy over ``episodes`` episodes."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for e in range(int(episodes)):
        obs, _ = env.reset(seed=seed + e)
        done = False
        while not done:
            obs, r, terminated, truncated, _ = env.step(agent.act(obs, 0.0, rng))
            total += r
            done = terminated or truncated
    return total / int(episodes)
