# Tensor operations — indexing, reductions, scatter/gather, einsum.
# %% setup
import torch
torch.manual_seed(11)
M = torch.randn(4, 5)

# %% reductions
print(M.sum().round(decimals=3), M.mean(dim=0).shape, M.max(dim=1).indices)

# %% sort and topk
vals, idx = M[0].sort(descending=True)
top = M.topk(2, dim=1)
print(idx, top.values.shape)

# %% gather and scatter_
index = torch.tensor([[0, 1], [2, 3], [4, 0], [1, 1]])
g = M.gather(1, index)
target = torch.zeros(4, 5)
target.scatter_(1, index, 1.0)
print(g.shape, target.sum(dim=1))

# %% masked_fill_ and clamp_ in place
N = M.clone()
N.masked_fill_(N < 0, 0.0)
N.clamp_(max=1.0)
print((N >= 0).all().item(), N.max().item() <= 1.0)

# %% where, nonzero, unique
W = torch.where(M > 0, M, torch.zeros_like(M))
nz = (W > 0).nonzero()
u = torch.tensor([3, 1, 3, 2, 1]).unique(return_counts=True)
print(nz.shape[1], u)

# %% einsum and batched matmul
A = torch.randn(2, 3, 4)
B = torch.randn(2, 4, 5)
C1 = torch.einsum("bij,bjk->bik", A, B)
C2 = torch.bmm(A, B)
print(torch.allclose(C1, C2), C1.shape)

# %% cumulative ops and norms
cs = torch.arange(1.0, 6.0).cumsum(0)
nrm = torch.linalg.vector_norm(M, dim=1)
print(cs, nrm.shape)

# %% stacking and index_add_
S = torch.stack([torch.ones(3), torch.zeros(3)])
acc = torch.zeros(3)
acc.index_add_(0, torch.tensor([0, 0, 2]), torch.tensor([1.0, 2.0, 5.0]))
print(S.shape, acc)

# %% boolean indexing assignment
Z = torch.arange(10)
Z[Z % 3 == 0] = -1
print(Z)
