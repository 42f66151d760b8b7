# Containers mutated in place, aliases and nesting.
# %% a config dict and an alias
config = {"lr": 0.01, "epochs": 3, "layers": [16, 8]}
same = config
layers = config["layers"]

# %% update in a later cell
config["lr"] = 0.1
config["layers"].append(4)
config.update(momentum=0.9)
print(same is config, layers)

# %% lists: append, extend, slice assignment
log = []
log.append("start")
log.extend(["a", "b"])
log[1:2] = ["A", "A2"]
print(log)

# %% += on a list is in place, + is not
alias = log
log += ["end"]
print(alias is log, len(alias))
log = log + ["copy"]
print(alias is log, len(alias), len(log))

# %% nested structures share inner objects
row = [0, 0]
grid = [row, row]
grid[0][1] = 5
print(grid)

# %% sets and dicts of lists
seen = set()
seen.add("x")
seen |= {"y", "z"}
buckets = {}
buckets.setdefault("even", []).append(2)
buckets.setdefault("even", []).append(4)
print(sorted(seen), buckets)

# %% pop and del
item = config.pop("epochs")
del log[0]
print(item, "epochs" in same, log[:2])

# %% delete a name
temp = [1, 2, 3]
del temp
print("temp" in dir())

# %% tensors inside a list, changed in place
import torch
weights = [torch.zeros(2), torch.ones(2)]
first = weights[0]
for w_ in weights:
    w_.add_(1)
print(first)

# %% a dict of tensors updated with in-place ops
state = {"mean": torch.zeros(3), "count": 0}
state["mean"].add_(torch.arange(3.0))
state["count"] += 1
print(state)

# %% printing a set of strings (order follows the hash seed)
tags = {"alpha", "beta", "gamma", "delta", "epsilon"}
print(tags)
print(list({"k1": 1, "k2": 2}))
