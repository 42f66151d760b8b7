# Neural networks — the blitz's LeNet, spread over cells.
# %% [local] seed
import torch
torch.manual_seed(1)

# %% define the network
import torch.nn as nn
import torch.nn.functional as F

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, input):
        c1 = F.relu(self.conv1(input))
        s2 = F.max_pool2d(c1, (2, 2))
        c3 = F.relu(self.conv2(s2))
        s4 = F.max_pool2d(c3, 2)
        s4 = torch.flatten(s4, 1)
        f5 = F.relu(self.fc1(s4))
        f6 = F.relu(self.fc2(f5))
        return self.fc3(f6)

net = Net()
print(net)

# %% the learnable parameters
params = list(net.parameters())
print(len(params))
print(params[0].size())

# %% a random 32x32 input
input = torch.randn(1, 1, 32, 32)
out = net(input)
print(out.shape)

# %% zero the gradient buffers and backprop random gradients
net.zero_grad()
out.backward(torch.randn(1, 10))

# %% a loss function
output = net(input)
target = torch.randn(10)
target = target.view(1, -1)
criterion = nn.MSELoss()
loss = criterion(output, target)
print(loss)

# %% follow the graph backwards
print(loss.grad_fn)
print(loss.grad_fn.next_functions[0][0])

# %% backprop
net.zero_grad()
print('conv1.bias.grad before backward')
print(net.conv1.bias.grad)
loss.backward()
print('conv1.bias.grad after backward')
print(net.conv1.bias.grad)

# %% update the weights by hand
learning_rate = 0.01
for f in net.parameters():
    if f.grad is not None:
        f.data.sub_(f.grad.data * learning_rate)

# %% with an optimizer, all in one cell
import torch.optim as optim
optimizer = optim.SGD(net.parameters(), lr=0.01)
optimizer.zero_grad()
output = net(input)
loss = criterion(output, target)
loss.backward()
optimizer.step()
print(round(loss.item(), 4))
