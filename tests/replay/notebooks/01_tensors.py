# Tensors — after the PyTorch 60-minute blitz, part 1.
# %% imports
import torch
print(torch.__version__.split("+")[0] >= "2")
# %% tensor from data
data = [[1, 2], [3, 4]]
x_data = torch.tensor(data)
x_data
# %% [local] seed locally
torch.manual_seed(0)
# %% random draw remotely
x_rand = torch.rand_like(x_data, dtype=torch.float)
print(f"Random Tensor: \n {x_rand} \n")
# %% numpy
import numpy as np
n = np.ones(3)
t = torch.from_numpy(n)
# %% raises
y = 1
1/0
