# Views, slicing and storage — what aliases what.
# %% a base tensor
import torch
base = torch.arange(12.0)
print(base)

# %% views share storage
v = base.view(3, 4)
row = v[1]
col = v[:, 2]
print(v.is_contiguous(), col.is_contiguous(), col.stride())

# %% writing through a view changes the base
row.fill_(-1)
col[0] = 100
print(base)

# %% transpose and contiguous
vt = v.t()
vc = vt.contiguous()
print(vt.is_contiguous(), vc.is_contiguous(), vt.data_ptr() == v.data_ptr())

# %% narrow, select, unbind, chunk
n1 = base.narrow(0, 2, 3)
parts = base.chunk(3)
first, *rest = v.unbind(0)
print([p.shape for p in parts], len(rest), n1)

# %% expand does not copy, repeat does
small = torch.tensor([[1.0], [2.0]])
ex = small.expand(2, 3)
rp = small.repeat(1, 3)
print(ex.stride(), rp.stride())
small.mul_(10)
print(ex)
print(rp)

# %% a view made in one cell, modified in another
window = base[4:8]

# %%
window.zero_()
print(base)

# %% reshape may or may not copy
r1 = v.reshape(4, 3)
r2 = vt.reshape(12)
print(r1.data_ptr() == base.data_ptr(), r2.data_ptr() == base.data_ptr())

# %% clone breaks the link
snapshot = base.clone()
base.add_(1)
print(snapshot[:3], base[:3])
