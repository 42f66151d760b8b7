# Beyond nn.Linear: torch.func, compiled functions, custom autograd, parametrizations, subclasses, meta tensors.
# %% setup
import torch
import torch.nn as nn
torch.manual_seed(11)
xs = torch.randn(5, 3)
w = torch.randn(3)

# %% torch.func.grad of a scalar function
from torch.func import grad, vmap, jacrev
def energy(v):
    return (v.sin() * w).sum()
g = grad(energy)(xs[0])
print(g.shape, torch.allclose(g, xs[0].cos() * w))

# %% vmap of grad: per-sample gradients in one call
per_sample = vmap(grad(energy))(xs)
print(per_sample.shape, torch.allclose(per_sample[2], xs[2].cos() * w))

# %% jacrev of a vector function
def squash(v):
    return torch.tanh(v) * 2
jac = jacrev(squash)(xs[1])
print(jac.shape, torch.allclose(jac.diagonal(), 2 * (1 - torch.tanh(xs[1]) ** 2)))

# %% a closure over the transforms, made in one cell
def make_hessian_diag(f):
    hess = jacrev(grad(f))
    def diag(v):
        return hess(v).diagonal()
    return diag
hdiag = make_hessian_diag(energy)
print(hdiag(xs[3]))

# %% the closure used in a later cell
print(torch.allclose(hdiag(xs[4]), -xs[4].sin() * w))

# %% torch.compile with the eager backend
def poly(t):
    return t**3 - 2 * t + 1
fast_poly = torch.compile(poly, backend="eager")
print(fast_poly(torch.tensor([0.0, 1.0, 2.0])))

# %% the compiled function used again in a later cell
print(torch.allclose(fast_poly(xs), poly(xs)))

# %% a custom autograd Function
class ClampGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp, limit):
        ctx.limit = limit
        return inp * 3
    @staticmethod
    def backward(ctx, out_grad):
        return (out_grad * 3).clamp(-ctx.limit, ctx.limit), None
leaf = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
ClampGrad.apply(leaf, 2.0).mul(torch.tensor([1.0, -1.0, 0.1])).sum().backward()
print(leaf.grad)

# %% the Function applied to another tensor in a later cell
other = torch.ones(2, requires_grad=True)
res = ClampGrad.apply(other, 1.5)
res.sum().backward()
print(res, other.grad)

# %% a parametrization on a Linear
import torch.nn.utils.parametrize as P
class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(0, 1)
lin = nn.Linear(3, 3)
P.register_parametrization(lin, "weight", Symmetric())
print(type(lin).__name__, P.is_parametrized(lin), torch.allclose(lin.weight, lin.weight.T))

# %% the parametrized Linear in a later cell
out_lin = lin(xs)
print(out_lin.shape, [n for n, _ in lin.named_parameters()])

# %% a tensor subclass defined in a cell
class Tagged(torch.Tensor):
    tag = "plain"
    def describe(self):
        return f"{self.tag}:{tuple(self.shape)}"
tagged = torch.arange(4.0).as_subclass(Tagged)
tagged.tag = "counts"
print(type(tagged).__name__, tagged.describe())

# %% the subclass survives arithmetic
doubled = tagged * 2
print(type(doubled).__name__, doubled.describe(), doubled.sum().item())

# %% meta-device tensors carry shapes, not data
blank = torch.empty(3, device="meta")
print(blank.device, blank.shape, blank.dtype)

# %% a module built on meta
meta_lin = nn.Linear(4, 2, device="meta")
meta_out = meta_lin(torch.empty(6, 4, device="meta"))
print(meta_out.shape, meta_out.device, meta_lin.weight.is_meta)

# %% materialize the meta module on the CPU
real_lin = meta_lin.to_empty(device="cpu")
with torch.no_grad():
    real_lin.weight.fill_(0.5)
    real_lin.bias.zero_()
print(real_lin(torch.ones(1, 4)))

# %% a training loop
torch.manual_seed(5)
net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
target = xs @ torch.tensor([0.5, -1.0, 2.0])
opt = torch.optim.Adam(net.parameters(), lr=0.05)
history = []
for step in range(30):
    opt.zero_grad()
    loss = ((net(xs).squeeze(1) - target) ** 2).mean()
    loss.backward()
    opt.step()
    history.append(round(loss.item(), 4))
print(len(history), history[-1] < history[0])

# %% [local] the notebook sees the training
print(len(history), net[0].weight.grad is not None)

# %% continue training in another cell
for step in range(10):
    opt.zero_grad()
    loss = ((net(xs).squeeze(1) - target) ** 2).mean()
    loss.backward()
    opt.step()
    history.append(round(loss.item(), 4))
print(len(history), history[-1] <= history[29])
