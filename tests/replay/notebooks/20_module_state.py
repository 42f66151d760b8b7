# Module state: buffers, train/eval, frozen parameters, tied weights.
# %% batch norm keeps running statistics
import torch
import torch.nn as nn
torch.manual_seed(5)
bn = nn.BatchNorm1d(3)
x = torch.randn(16, 3) * 4 + 2
_ = bn(x)
print(bn.running_mean, bn.num_batches_tracked)

# %% eval mode stops the updates
bn.eval()
before = bn.running_mean.clone()
_ = bn(x)
print(torch.equal(before, bn.running_mean), bn.training)

# %% train mode again, in another cell
bn.train()
_ = bn(x + 1)
print(bn.num_batches_tracked.item(), bn.training)

# %% dropout in eval mode is the identity
drop = nn.Dropout(0.5).eval()
print(torch.equal(drop(torch.ones(4)), torch.ones(4)))

# %% a model with a registered buffer
class Normalizer(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.register_buffer("scale", torch.ones(n))
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        return self.lin(x * self.scale)

norm_model = Normalizer(3)
norm_model.scale.mul_(2)
print(list(dict(norm_model.named_buffers())))

# %% freeze part of the model
for p in norm_model.lin.parameters():
    p.requires_grad_(False)
trainable = [n for n, p in norm_model.named_parameters() if p.requires_grad]
print(trainable)

# %% tied weights
emb = nn.Embedding(10, 4)
head = nn.Linear(4, 10, bias=False)
head.weight = emb.weight
tied = nn.ModuleDict({"emb": emb, "head": head})
print(tied["head"].weight is tied["emb"].weight)

# %% modify the shared weight in place
with torch.no_grad():
    emb.weight[0].fill_(1.0)
print(head.weight[0])

# %% state_dict copies and load
sd = {k: v.clone() for k, v in norm_model.state_dict().items()}
with torch.no_grad():
    norm_model.lin.weight.zero_()
norm_model.load_state_dict(sd)
print(norm_model.lin.weight.abs().sum() > 0)

# %% named_modules and apply
def init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.constant_(m.weight, 0.5)

seq = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
seq.apply(init_weights)
print([n for n, _ in seq.named_modules()], seq[2].weight)
