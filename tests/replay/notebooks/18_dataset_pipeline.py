# Datasets and DataLoaders — a tiny image classifier, CIFAR-tutorial style, on fake data.
# %% imports and seed
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, DataLoader, TensorDataset
torch.manual_seed(0)

# %% a Dataset class defined in the notebook
class Blobs(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x += self.y.view(-1, 1, 1, 1).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

train_set = Blobs(96, seed=1)
test_set = Blobs(32, seed=2)
print(len(train_set), train_set[0][0].shape, train_set[0][1])

# %% loaders with a seeded shuffle
loader_gen = torch.Generator().manual_seed(3)
trainloader = DataLoader(train_set, batch_size=16, shuffle=True, generator=loader_gen)
testloader = DataLoader(test_set, batch_size=16)
images, labels = next(iter(trainloader))
print(images.shape, labels)

# %% a small CNN
class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))

net = SmallNet()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

# %% train one epoch
running = 0.0
for inputs, targets in trainloader:
    optimizer.zero_grad()
    loss = criterion(net(inputs), targets)
    loss.backward()
    optimizer.step()
    running += loss.item()
print(f"epoch loss {running / len(trainloader):.4f}")

# %% accuracy on the test set
correct = total = 0
with torch.no_grad():
    for inputs, targets in testloader:
        predicted = net(inputs).argmax(1)
        total += targets.size(0)
        correct += (predicted == targets).sum().item()
print(f"accuracy {100 * correct // total} %")

# %% a second epoch in another cell
for inputs, targets in trainloader:
    optimizer.zero_grad()
    criterion(net(inputs), targets).backward()
    optimizer.step()
print(sorted(optimizer.state_dict()["state"].keys()))

# %% TensorDataset
pairs = TensorDataset(torch.arange(10.0), torch.arange(10) % 2)
small_loader = DataLoader(pairs, batch_size=4)
print([b[0].tolist() for b in small_loader])

# %% per-class counts with bincount
all_labels = torch.cat([y for _, y in testloader])
print(torch.bincount(all_labels, minlength=3))
