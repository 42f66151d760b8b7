# Functions and classes defined in the notebook, used in later cells.
# %% a function with defaults
def scale(values, factor=2):
    return [v * factor for v in values]

print(scale([1, 2, 3]))

# %% a function that reads a notebook global at call time
OFFSET = 10
def shifted(v):
    return v + OFFSET

print(shifted(1))

# %% rebinding the global changes what the function sees
OFFSET = 100
print(shifted(1))

# %% closures and decorators
import functools

def counted(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)
    wrapper.calls = 0
    return wrapper

@counted
def square(x):
    return x * x

print([square(i) for i in range(4)], square.calls)

# %% the counter keeps counting in the next cell
square(5)
print(square.calls, square.__name__)

# %% a class with state
class Accumulator:
    """Keeps a running total."""
    def __init__(self, start=0):
        self.total = start
        self.history = []

    def add(self, x):
        self.total += x
        self.history.append(x)
        return self

acc = Accumulator()
acc.add(3).add(4)
print(acc.total, acc.history)

# %% mutate the instance in a later cell
acc.add(10)
acc.label = "running"
print(vars(acc))

# %% inheritance and super()
class Averager(Accumulator):
    def mean(self):
        return self.total / max(len(self.history), 1)

avg = Averager(0)
for v in (2, 4, 9):
    avg.add(v)
print(avg.mean(), isinstance(avg, Accumulator))

# %% dataclasses
from dataclasses import dataclass, field

@dataclass
class Config:
    lr: float = 0.01
    layers: list = field(default_factory=lambda: [64, 64])
    name: str = "base"

cfg = Config(lr=0.1)
cfg.layers.append(32)
print(cfg)

# %% partial and lambda
from functools import partial
triple = partial(scale, factor=3)
key_fn = lambda p: (-p[1], p[0])
pairs = sorted([("a", 2), ("b", 3), ("c", 2)], key=key_fn)
print(triple([1, 2]), pairs)

# %% recursion and memoisation
@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

print(fib(30), fib.cache_info().hits > 0)

# %% an alias to a function keeps its identity
also_scale = scale
print(also_scale is scale, also_scale([5], factor=10))

# %% class attributes and classmethods
class Registry:
    items = []

    @classmethod
    def register(cls, name):
        cls.items.append(name)
        return name

Registry.register("conv")
Registry.register("linear")
print(Registry.items)
