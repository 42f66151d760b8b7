# Bridge with NumPy — tensors on the CPU and numpy arrays can share their memory.
# %% a tensor, then its numpy view
import torch
t = torch.ones(5)
print(f"t: {t}")
n = t.numpy()
print(f"n: {n}")

# %% a change in the tensor reflects in the numpy array
t.add_(1)
print(f"t: {t}")
print(f"n: {n}")

# %% numpy imported inside the cell
import numpy as np
n2 = np.ones(5)
t2 = torch.from_numpy(n2)

# %% changes in the numpy array reflect in the tensor
np.add(n2, 1, out=n2)
print(f"t2: {t2}")
print(f"n2: {n2}")

# %% numpy made and shared in one remote cell
a = np.arange(6, dtype=np.float32).reshape(2, 3)
ta = torch.from_numpy(a)
tb = torch.zeros(3)
nb = tb.numpy()
nb[0] = 7.0
print(ta.sum().item(), tb)

# %% later in-place change must show in the partner
ta.mul_(2)
tb[1] = 3.0
print(a)
print(nb)

# %% as_tensor keeps the memory, tensor() copies
base = np.linspace(0.0, 1.0, 5)
shared = torch.as_tensor(base)
copied = torch.tensor(base)
base[0] = -1.0
print(shared[0].item(), copied[0].item())

# %% dtypes through the bridge
ints = np.array([1, 2, 3], dtype=np.int32)
ti = torch.from_numpy(ints)
print(ti.dtype, ti.numpy().dtype)
half = torch.arange(4, dtype=torch.float16).numpy()
print(half.dtype, half)

# %% numpy scalars and 0-d tensors
s = np.float64(2.5)
t0 = torch.tensor(s)
print(t0, t0.dtype, float(t0) * 2)
