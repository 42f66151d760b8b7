# A notebook that mixes local cells and remote cells, the way people use the magic.
# %% [local] data and a model, made locally
import torch
import torch.nn as nn
torch.manual_seed(3)
features = torch.randn(40, 3)
labels = features @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
model = nn.Linear(3, 1)
params_before = [p.detach().clone() for p in model.parameters()]

# %% train remotely with an optimizer made in the cell
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for _ in range(25):
    opt.zero_grad()
    l = nn.functional.mse_loss(model(features).squeeze(1), labels)
    l.backward()
    opt.step()
print(round(l.item(), 4))

# %% [local] the notebook's model was trained in place
print(any(not torch.equal(a, b) for a, b in zip(params_before, model.parameters())))
print(opt.param_groups[0]["params"][0] is model.weight)

# %% [local] a local in-place change between remote cells
features[:, 0].mul_(0)

# %% the remote cell sees it
print(features[:, 0].abs().sum().item())

# %% a numpy view of a notebook tensor, made remotely
view_np = features.numpy()
col0 = features[:, 1]

# %% [local] the view follows the notebook's tensor
features[0, 1] = 123.0
print(view_np[0, 1], col0[0].item())

# %% evaluate remotely
with torch.no_grad():
    preds = model(features[:5]).squeeze(1)
print(preds.shape)

# %% [local] evaluate locally: same model, same numbers
with torch.no_grad():
    preds_local = model(features[:5]).squeeze(1)
print(torch.equal(preds, preds_local))

# %% [local] seeding locally right before a remote draw
torch.manual_seed(77)

# %% the remote draw follows the notebook's seed
noise = torch.randn(3)
print(noise)
