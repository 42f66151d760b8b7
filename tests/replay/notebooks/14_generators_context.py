# Generators, iterators and context managers.
# %% a generator function
def countdown(n):
    while n > 0:
        yield n
        n -= 1

print(list(countdown(3)))

# %% generator expressions consumed in the cell
squares = sum(x * x for x in range(10))
evens = [x for x in range(20) if x % 2 == 0]
print(squares, evens[-1])

# %% a batching iterator over a dataset
import itertools

def batches(seq, size):
    it = iter(seq)
    while chunk := list(itertools.islice(it, size)):
        yield chunk

print(list(batches(range(7), 3)))

# %% a class-based context manager
class Timer:
    def __init__(self):
        self.entered = 0
        self.exited = 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1
        return False

timer = Timer()
with timer as t:
    total = sum(range(1000))
print(total, timer.entered, timer.exited, t is timer)

# %% reuse the context manager in another cell
with timer:
    pass
print(timer.entered, timer.exited)

# %% contextlib.contextmanager
from contextlib import contextmanager
log = []

@contextmanager
def tag(name):
    log.append(f"<{name}>")
    yield name.upper()
    log.append(f"</{name}>")

with tag("b") as inner:
    log.append(inner)
print(log)

# %% [local] the decorated function used again in a local cell
with tag("i") as inner:
    log.append(inner)
print(log)

# %% suppress and redirect_stdout
import contextlib, io
with contextlib.suppress(KeyError):
    {}["missing"]
captured = io.StringIO()
with contextlib.redirect_stdout(captured):
    print("hidden")
print(repr(captured.getvalue()))

# %% itertools helpers
pairs = list(itertools.combinations("abc", 2))
cum = list(itertools.accumulate([1, 2, 3, 4]))
cyc = list(itertools.islice(itertools.cycle([0, 1]), 5))
print(pairs, cum, cyc)

# %% a file written next to the notebook and read back
import os
path = os.path.join("outputs", "notes.txt")
os.makedirs("outputs", exist_ok=True)
with open(path, "w") as fh:
    fh.write("line one\nline two\n")
with open(path) as fh:
    lines = fh.read().splitlines()
print(lines, fh.closed)

# %% a generator object kept in the notebook
gen = countdown(5)
print(next(gen), next(gen))

# %% advance it in a later cell
print(next(gen))
