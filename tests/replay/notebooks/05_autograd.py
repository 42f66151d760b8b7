# A gentle introduction to torch.autograd — gradients across cells.
# %% a leaf that requires grad
import torch
x = torch.ones(2, 2, requires_grad=True)
print(x)

# %% operations build a graph
y = x + 2
print(y)
print(y.grad_fn)

# %% more operations
z = y * y * 3
out = z.mean()
print(z, out)

# %% backward in the next cell
out.backward()

# %% the leaf's gradient
print(x.grad)

# %% a leaf made and differentiated in one cell
a = torch.tensor([2.0, 3.0], requires_grad=True)
b = torch.tensor([6.0, 4.0], requires_grad=True)
Q = 3 * a**3 - b**2
external_grad = torch.tensor([1.0, 1.0])
Q.backward(gradient=external_grad)
print(9 * a**2 == a.grad)
print(-2 * b == b.grad)

# %% gradients accumulate over cells
loss2 = (a * b).sum()
loss2.backward()
print(a.grad, b.grad)

# %% zero them in place
a.grad.zero_()
b.grad = None
print(a.grad, b.grad)

# %% no_grad and detach
with torch.no_grad():
    w = a * 2
d = (a * 3).detach()
print(w.requires_grad, d.requires_grad, d.is_leaf)

# %% requires_grad_ on an existing tensor
c = torch.randn(3).requires_grad_()
print(c.requires_grad, c.is_leaf)

# %% grad mode switched off for the notebook
torch.set_grad_enabled(False)
e = a * 5
print(e.requires_grad)

# %% and back on
torch.set_grad_enabled(True)
f = a * 5
print(f.requires_grad)
