# One optimisation step spread over cells, as people step through it when debugging.
# %% data and model
import torch
import torch.nn as nn
torch.manual_seed(7)
X = torch.randn(64, 4)
Y = (X.sum(dim=1, keepdim=True) > 0).float()
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
loss_fn = nn.BCEWithLogitsLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

# %% zero the grads
optimizer.zero_grad()

# %% forward
logits = model(X)
loss = loss_fn(logits, Y)
print(round(loss.item(), 4))

# %% backward, in its own cell
loss.backward()

# %% the gradient arrived on the first layer
print(model[0].weight.grad is not None)

# %% step
optimizer.step()

# %% a whole step in one cell, twice
for _ in range(2):
    optimizer.zero_grad()
    loss = loss_fn(model(X), Y)
    loss.backward()
    optimizer.step()
print(round(loss.item(), 4))

# %% accuracy
with torch.no_grad():
    acc = ((model(X) > 0).float() == Y).float().mean()
print(f"accuracy {acc.item():.3f}")
