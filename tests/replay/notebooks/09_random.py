# Random numbers — seeded in the notebook, seeded in a cell, generators as objects.
# %% [local] seed everything in the notebook
import random
import numpy as np
import torch
random.seed(0)
np.random.seed(0)
torch.manual_seed(0)

# %% draw after the notebook's seeds
r_torch = torch.rand(3)
r_np = np.random.rand(3)
r_py = random.random()
print(r_torch, r_np, r_py)

# %% [local] the next local draw continues the notebook's stream
after = torch.rand(2)
print(after)

# %% seeding inside a cell
torch.manual_seed(123)
inside = torch.randn(2)
print(inside)

# %% the next cell continues from that seed
continued = torch.randn(2)
print(continued)

# %% the generator returned by manual_seed
g = torch.manual_seed(5)
print(g is torch.default_generator, g.initial_seed())

# %% a generator object of our own
gen = torch.Generator().manual_seed(2024)
perm = torch.randperm(6, generator=gen)
print(perm)

# %% the generator keeps its state between cells
perm2 = torch.randperm(6, generator=gen)
print(perm2)

# %% numpy's Generator API
rng = np.random.default_rng(7)
draws = rng.integers(0, 10, size=5)
print(draws)

# %%
more = rng.normal(size=2)
print(more)

# %% python's random module, seeded in a cell
random.seed(99)
deck = list(range(10))
random.shuffle(deck)
print(deck, random.randint(0, 100))

# %% dropout depends on the global generator
torch.manual_seed(3)
drop = torch.nn.Dropout(p=0.5)
masked = drop(torch.ones(8))
print(masked)
