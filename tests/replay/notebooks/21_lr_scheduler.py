# Adam with a learning-rate schedule, stepped across cells.
# %% model and optimizer
import torch
import torch.nn as nn
torch.manual_seed(21)
model = nn.Linear(3, 1)
opt = torch.optim.Adam(model.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
data = torch.randn(32, 3)
target = data.sum(dim=1, keepdim=True)

# %% one epoch: step the optimizer and the scheduler
def epoch():
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(data), target)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()

print(round(epoch(), 4), sched.get_last_lr())

# %% another epoch in its own cell
print(round(epoch(), 4), sched.get_last_lr())

# %% Adam's state lives per parameter
state = opt.state[model.weight]
print(sorted(state), state["step"])

# %% change the learning rate by hand
for group in opt.param_groups:
    group["lr"] = 0.01
print(opt.param_groups[0]["lr"])

# %% several epochs
losses = [epoch() for _ in range(5)]
print(len(losses), sched.last_epoch)

# %% an optimizer over the parameters, created remotely, steps the notebook's model
opt2 = torch.optim.SGD(model.parameters(), lr=0.001)
before = model.weight.detach().clone()
opt2.zero_grad()
nn.functional.mse_loss(model(data), target).backward()
opt2.step()
print(torch.equal(before, model.weight.detach()))

# %% the optimizers share the parameters
print(opt.param_groups[0]["params"][0] is opt2.param_groups[0]["params"][0])
