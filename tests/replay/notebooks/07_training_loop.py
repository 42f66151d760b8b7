# Linear regression from scratch, then with nn — the whole loop inside cells.
# %% data
import torch
torch.manual_seed(42)
true_w, true_b = torch.tensor([2.0, -3.4]), 4.2
X = torch.randn(200, 2)
y = X @ true_w + true_b + 0.01 * torch.randn(200)
print(X.shape, y.shape)

# %% parameters by hand
w = torch.zeros(2, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
lr = 0.1

# %% a training loop in one cell
for epoch in range(20):
    pred = X @ w + b
    loss = ((pred - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        w -= lr * w.grad
        b -= lr * b.grad
        w.grad.zero_()
        b.grad.zero_()
print(f"w={w.detach()}, b={b.item():.3f}, loss={loss.item():.5f}")

# %% the same with nn.Linear and an optimizer
import torch.nn as nn
model = nn.Linear(2, 1)
loss_fn = nn.MSELoss()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
history = []

# %% train for a few epochs
for epoch in range(30):
    opt.zero_grad()
    l = loss_fn(model(X).squeeze(-1), y)
    l.backward()
    opt.step()
    history.append(l.item())
print(len(history), round(history[-1], 5))

# %% keep training in another cell
for epoch in range(30):
    opt.zero_grad()
    l = loss_fn(model(X).squeeze(-1), y)
    l.backward()
    opt.step()
    history.append(l.item())
print(len(history), round(history[-1], 6))

# %% evaluate without gradients
with torch.no_grad():
    test_pred = model(torch.tensor([[1.0, 1.0]]))
print(test_pred)

# %% inspect the learnt parameters
for name, p in model.named_parameters():
    print(name, p.data, p.grad is not None)

# %% save and load the state dict through a buffer
import io
buf = io.BytesIO()
torch.save(model.state_dict(), buf)
buf.seek(0)
clone = nn.Linear(2, 1)
clone.load_state_dict(torch.load(buf))
print(torch.equal(clone.weight, model.weight))
