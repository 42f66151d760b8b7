# Star imports and modules imported in cells, as old tutorials write them.
# %% from math import *
from math import *
print(sqrt(16), round(pi, 5), floor(2.7))

# %% use the names in the next cell
area = pi * 2 ** 2
print(round(area, 3), isclose(cos(0), 1.0))

# %% a module under an alias
import math as m
import statistics as stats
print(m.factorial(5), stats.mean([1, 2, 3, 4]))

# %% from-import of several names
from collections import OrderedDict, namedtuple
Point = namedtuple("Point", "x y")
p = Point(1, 2)
od = OrderedDict(b=1, a=2)
print(p, list(od))

# %% star import from torch.nn.functional
import torch
from torch.nn.functional import *
act = relu(torch.tensor([-1.0, 2.0]))
print(act, softmax(torch.tensor([1.0, 1.0]), dim=0))

# %% a module imported in a function's body
def norm2(v):
    import math
    return math.sqrt(sum(x * x for x in v))

print(norm2([3, 4]))

# %% the string module
import string
print(string.ascii_lowercase[:5], string.capwords("hello world"))
