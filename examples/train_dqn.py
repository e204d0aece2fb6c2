"""A DQN (replay buffer, target network, RMSprop) learns gymnasium's CartPole-v1.

    python examples/train_dqn.py --steps 6000
"""
import sys
import time

import numpy as np
from _common import parser, setup

from pydl import models


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=6000, lr=1e-3)
    args = p.parse_args(argv)
    setup(args)
    try:
        import gymnasium as gym
    except ImportError:
        sys.exit("train_dqn.py needs gymnasium: pip install gymnasium (or pip install 'pydl[test]')")
    env = gym.make("CartPole-v1")
    t0 = time.perf_counter()
    agent = models.DQN(4, 2, hidden=64, lr=args.lr, target_every=100)
    agent, returns, losses = models.train_dqn(env, args.steps, agent, warmup=200, eps_decay=args.steps // 2,
                                              batch_size=32, seed=args.seed)
    for i in range(0, len(returns), max(1, len(returns) // 8)):
        print(f"episode {i + 1:4d}  return {returns[i]:6.1f}")
    score = models.evaluate(env, agent, episodes=10)
    print(f"{args.steps} steps ({len(returns)} episodes) in {time.perf_counter() - t0:.1f} s; "
          f"first 10 episodes averaged {np.mean(returns[:10]):.1f}, the greedy policy now averages {score:.1f} "
          f"over 10 episodes (500 is the maximum; a random policy gets about 22)")
    return float(score)


if __name__ == "__main__":
    main(sys.argv[1:])
