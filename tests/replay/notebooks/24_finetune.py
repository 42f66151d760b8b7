# Fine-tuning: a frozen backbone, a new head, the usual device dance.
# %% a "pretrained" backbone
import torch
import torch.nn as nn
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
head = nn.Linear(16, 2)

# %% freeze the backbone
for p in backbone.parameters():
    p.requires_grad = False
model = nn.Sequential(backbone, head).to(device)
print(sum(p.numel() for p in model.parameters() if p.requires_grad))

# %% only the head is optimised
optimizer = torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-2)
inputs = torch.randn(32, 8, device=device)
classes = (inputs[:, 0] > 0).long()

# %% a few steps
model.train()
for step in range(10):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(inputs), classes)
    loss.backward()
    optimizer.step()
print(f"{loss.item():.4f}")

# %% gradients only on the head
print([p.grad is None for p in backbone.parameters()], head.weight.grad is not None)

# %% unfreeze and add a param group
for p in backbone[2].parameters():
    p.requires_grad = True
optimizer.add_param_group({"params": backbone[2].parameters(), "lr": 1e-3})
print(len(optimizer.param_groups), [g["lr"] for g in optimizer.param_groups])

# %% move to cpu for inspection, as after GPU training
cpu_model = model.to("cpu").eval()
with torch.no_grad():
    probs = cpu_model(inputs.cpu()).softmax(dim=1)
print(probs.shape, round(probs.sum().item(), 3))

# %% results as plain python
summary = {"loss": round(loss.item(), 4), "acc": (probs.argmax(1) == classes).float().mean().item()}
summary
