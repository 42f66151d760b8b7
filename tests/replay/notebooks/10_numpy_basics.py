# NumPy: the absolute basics for beginners.
# %% import and create
import numpy as np
a = np.array([1, 2, 3, 4, 5, 6])
print(a[0], a.ndim, a.shape, a.size, a.dtype)

# %% arange, linspace, zeros
b = np.arange(2, 9, 2)
c = np.linspace(0, 10, num=5)
z = np.zeros((2, 3))
print(b, c, z.shape)

# %% reshape and views
m = a.reshape(2, 3)
print(m, np.shares_memory(m, a))
m[0, 0] = 100
print(a)

# %% slicing views and copies
evens = a[::2]
picked = a[[0, 2, 4]]
evens[:] = 0
print(a, picked)

# %% boolean masks
data = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
print(data[data < 5])
five_up = data >= 5
print(data[five_up])
print(np.nonzero(data < 5))

# %% broadcasting
row = np.array([1.0, 2.0, 3.0, 4.0])
scaled = data * row
print(scaled)
print(data.mean(axis=0), data.max(axis=1))

# %% in-place operations on an existing array
data += 1
data[:, 0] *= -1
print(data)

# %% stacking and splitting
s1 = np.vstack([row, row * 2])
h = np.hsplit(np.arange(12).reshape(2, 6), 3)
print(s1.shape, [x.shape for x in h])

# %% unique and sorting
vals = np.array([3, 1, 2, 3, 1, 1])
u, counts = np.unique(vals, return_counts=True)
order = np.argsort(vals, kind="stable")
print(u, counts, order)

# %% np.where and clip
clipped = np.clip(data, -5, 8)
signs = np.where(data > 0, "pos", "neg")
print(clipped)
print(signs)

# %% structured arrays
people = np.array([("ann", 31, 1.62), ("bob", 27, 1.80)],
                  dtype=[("name", "U10"), ("age", "i4"), ("height", "f8")])
print(people["age"].mean(), people[people["height"] > 1.7]["name"])
