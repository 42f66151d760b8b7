# Cells that raise — what a notebook looks like after each.
# %% a name error
print(undefined_name)

# %% a partial cell: assignments before the error stay
progress = []
progress.append(1)
counter = 1
counter = counter / 0

# %% what survived
print(progress, counter)

# %% key errors on a dict
table = {"a": 1}
table["b"]

# %% a custom exception class defined in the notebook
class ShapeError(ValueError):
    pass

def check(shape):
    if len(shape) != 2:
        raise ShapeError(f"expected 2 dims, got {len(shape)}")
    return shape

check((1, 2))

# %% raising it
check((1, 2, 3))

# %% catching it in the next cell
try:
    check((1,))
except ShapeError as err:
    caught = str(err)
print(caught)

# %% torch shape mismatch
import torch
A = torch.ones(2, 3)
B = torch.ones(2, 3)
C = A @ B

# %% assertion error with a message
assert A.shape == (3, 2), f"bad shape {tuple(A.shape)}"

# %% syntax error
def broken(:
    pass

# %% the notebook still works afterwards
ok = A + B
print(ok.sum().item())

# %% an error inside a loop, after some iterations mutated a list
results = []
for i in range(5):
    results.append(10 / (2 - i))
